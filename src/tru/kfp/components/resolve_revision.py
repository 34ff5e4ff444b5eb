"""Component ``resolve_revision``: a branch, tag or ``HEAD`` → the commit sha, at run time (never
cached), so that a scheduled run's ingest is cached on the real data, not on the name ``main``."""

from kfp import dsl

from tru.kfp.components.images import IMAGE_CPU


@dsl.component(base_image=IMAGE_CPU, install_kfp_package=False)
def resolve_revision(repo: str, rev: str) -> str:
    """The commit sha of ``rev`` (default ``HEAD``) in the git + DVC repository ``repo`` (a URL on the
    cluster: git credentials from ``$TRU_GIT_TOKEN``); '' when ``repo`` is a plain dataset folder."""
    from tru.mlops import versioning

    if not versioning.is_repo_ref(repo):
        return ""
    return versioning.resolve_rev_ref(repo, rev or "HEAD")
