"""Compile / run locally / submit / schedule (re-exported from :mod:`tru.kfp.runner`).

python -m pipelines.runner OUT.yaml      # or: tru pipeline compile --out OUT.yaml
"""

import sys

from tru.kfp.runner import (
    PipelineError,
    compile_pipeline,
    main,
    run_for_trigger,
    run_local,
    schedule,
    submit,
)

__all__ = ["PipelineError", "compile_pipeline", "main", "run_for_trigger", "run_local", "schedule", "submit"]

if __name__ == "__main__":
    sys.exit(main())
