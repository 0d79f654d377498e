# Stand-in for redis:7-alpine: Debian's redis-server. Like the official image it serves
# every address without protected mode and keeps its data under /data.
ARG BASE
FROM ${BASE}
COPY redis-entrypoint.sh /usr/local/bin/
WORKDIR /data
ENTRYPOINT ["redis-entrypoint.sh"]
CMD ["redis-server"]
