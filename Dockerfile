# The web app for compose.yaml. The index lives in the qdrant service (QDRANT_URL).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY app app
COPY ingest ingest
COPY model model
COPY qdrant qdrant
RUN pip install --no-cache-dir .
EXPOSE 7860
CMD ["devise", "serve", "--host", "0.0.0.0", "--port", "7860"]
