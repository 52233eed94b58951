# ckpt-guard GitHub Action image. Released images are prebuilt (`runs.image: docker://…` on
# release tags, see scripts/release_action.py); `main` builds this file (`image: Dockerfile`).
# BASE_IMAGE lets CI (no registry reachable) build from a local stand-in; users get the
# official slim Python image. No torch: checking and fixing never import it.
#
# Two stages: `build` installs the package and its dependencies into /opt/ckpt-guard and
# gathers git + git-lfs with only the shared libraries the base lacks; the final stage copies
# just that onto the untouched base — no apt lists, no pip, no compilers, no perl.
ARG BASE_IMAGE=python:3.12-slim

FROM ${BASE_IMAGE} AS build
ARG PIP_INDEX_URL=https://pypi.org/simple
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# What the base already has, so only libraries it lacks are copied into the final image.
RUN find / -xdev \( -path /proc -o -path /sys \) -prune -o -name '*.so*' -print \
      | sort > /base-libs.txt
# git runs its commands (diff, show, cat-file, ls-files, check-attr, commit, push) as builtins
# of one binary (git-core's dashed names, e.g. git-upload-pack for local fetches, are links to
# it); fetching the base commit over HTTPS needs git-remote-http; git-lfs is one static binary. Debian's git package would add perl and ~200 MB of dependencies with it.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends git git-lfs \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /staging/usr/bin /staging/usr/lib/git-core \
 && cp /usr/bin/git /usr/bin/git-lfs /staging/usr/bin/ \
 && cp /usr/lib/git-core/git-remote-http /staging/usr/lib/git-core/ \
 && ln -s git-remote-http /staging/usr/lib/git-core/git-remote-https \
 && ln -s /usr/bin/git /staging/usr/lib/git-core/git \
 && find /usr/lib/git-core -maxdepth 1 -type l -lname git -exec cp -P {} /staging/usr/lib/git-core/ \; \
 && ldd /usr/bin/git /usr/lib/git-core/git-remote-http \
      | awk '$3 ~ /^\// {print $3}' | sort -u \
      | while read -r lib; do \
          dir=$(readlink -f "$(dirname "$lib")"); name=$(basename "$lib"); \
          if ! grep -qxF "$dir/$name" /base-libs.txt; then \
            mkdir -p "/staging$dir"; cp -L "$lib" "/staging$dir/$name"; \
          fi; \
        done

COPY pyproject.toml README* /src/ckpt-guard/
COPY src /src/ckpt-guard/src
# --target keeps the install in one folder whatever the base's Python layout (Debian's
# dist-packages or the official image's site-packages); bytecode is compiled here so the
# container starts fast. Test folders of the dependencies are not needed at run time.
RUN python3 -m pip install --no-compile --target /opt/ckpt-guard/lib \
      --index-url "${PIP_INDEX_URL}" /src/ckpt-guard \
 && rm -rf /opt/ckpt-guard/lib/bin /opt/ckpt-guard/lib/numpy/*/tests \
      /opt/ckpt-guard/lib/numpy/tests /opt/ckpt-guard/lib/numpy/_pyinstaller \
 && python3 -m compileall -q -j 0 /opt/ckpt-guard/lib

FROM ${BASE_IMAGE}
COPY --from=build /staging/ /
COPY --from=build /opt/ckpt-guard /opt/ckpt-guard
ENV PYTHONPATH=/opt/ckpt-guard/lib \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The workspace belongs to the runner user and the container runs as root: without
# safe.directory git refuses it ("dubious ownership"). skip-smudge: ckpt-guard pulls LFS
# objects itself, only for the files it checks.
RUN git config --system --add safe.directory '*' \
 && git lfs install --system --skip-smudge >/dev/null \
 && python3 -m ckpt_guard --version

ENTRYPOINT ["python3", "-m", "ckpt_guard", "action"]
