# ckpt-guard GitHub Action image: `runs: using: docker, image: Dockerfile`.
# BASE_IMAGE lets CI (no registry reachable) build from a local stand-in; users get the
# official slim Python image. No torch: checking and fixing never import it.
ARG BASE_IMAGE=python:3.12-slim
FROM ${BASE_IMAGE}

ARG PIP_INDEX_URL=https://pypi.org/simple
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# git for diffs/base sizes/commits on the mounted workspace, git-lfs for pointer files.
# The workspace belongs to the runner user and the container runs as root: without
# safe.directory git refuses it ("dubious ownership"). skip-smudge: we pull LFS objects
# ourselves, only for the files being checked.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends git git-lfs \
 && rm -rf /var/lib/apt/lists/* \
 && git config --system --add safe.directory '*' \
 && git lfs install --system --skip-smudge

COPY pyproject.toml README* /opt/ckpt-guard/
COPY src /opt/ckpt-guard/src
RUN python3 -m pip install --index-url "${PIP_INDEX_URL}" /opt/ckpt-guard \
 && rm -rf /opt/ckpt-guard \
 && ckpt-guard --version

ENTRYPOINT ["ckpt-guard", "action"]
