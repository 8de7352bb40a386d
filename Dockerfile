# The pfdx pipeline image. Every Kubeflow component runs in it, and so do the Python
# workers of Beam on Dataflow / Flink / Spark: TFX's stock image has no pfdx, and its
# components would fail with ModuleNotFoundError.
#
#   IMAGE=europe-docker.pkg.dev/PROJECT/REPOSITORY/pfdx:$(git rev-parse --short HEAD)
#   docker build --platform linux/amd64 -t "$IMAGE" .        # GPU Trainer: --build-arg TF_CUDA=true
#   docker push "$IMAGE"
ARG PYTHON_VERSION=3.11
ARG BEAM_VERSION=2.60.0
FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION} AS beam

FROM python:${PYTHON_VERSION}-slim
# pfdx sets TF_USE_LEGACY_KERAS on import, but TFX's executor entry point imports
# TensorFlow first.
ENV TF_USE_LEGACY_KERAS=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# The verified lock, installed as a whole like `make env` (TFX 1.16 declares
# Python < 3.11 although every wheel it needs exists for 3.11). Two entries are
# sdists with C/C++ extensions (crcmod, pyfarmhash): the compilers leave in the same layer.
COPY requirements.lock /tmp/requirements.lock
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && pip install --no-deps --ignore-requires-python -r /tmp/requirements.lock \
 && apt-get purge -y --auto-remove build-essential \
 && rm -rf /var/lib/apt/lists/* /tmp/requirements.lock

# TensorFlow's pip wheel finds a GPU only with the CUDA/cuDNN wheels of its `and-cuda`
# extra; without them a Trainer pod given GPUs trains on its CPU.
ARG TF_CUDA=false
RUN if [ "$TF_CUDA" = true ]; then \
      pip install "tensorflow[and-cuda]==$(pip show tensorflow | sed -n 's/^Version: //p')"; \
    fi

# Beam's worker boot program: Dataflow (--sdk_container_image) and Flink/Spark worker
# pools start Python SDK workers from this image through it.
COPY --from=beam /opt/apache/beam /opt/apache/beam

# Installed from a scratch copy: a source tree in the working directory would shadow
# the installed package (its `pfdx/` folder holds only the config, not the subpackages).
COPY . /tmp/pfdx
RUN pip install --no-deps /tmp/pfdx && rm -rf /tmp/pfdx

# Kubeflow components set their own command (TFX's executor entry point).
ENTRYPOINT ["/opt/apache/beam/boot"]
