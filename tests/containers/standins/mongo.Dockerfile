# Stand-in for mongo:7: SecantusDB, the MongoDB-wire-compatible server the tests use
# (DESIGN §9), installed on the host (pip --target; no network in the build) and run by
# Debian's python3 with its data under /data/db. Standalone, like mongo:7 started without
# a replica set: drivers connect to the address they were given.
ARG BASE
FROM ${BASE}
COPY secantus /opt/secantus
ENV PYTHONPATH=/opt/secantus
VOLUME /data/db
CMD ["python3", "-c", "import sys; from secantus.cli import main; sys.argv[0] = 'secantusd'; sys.exit(main())", "--host", "0.0.0.0", "--port", "27017", "--storage-path", "/data/db", "--standalone"]
