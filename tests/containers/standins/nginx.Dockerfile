# Stand-in for nginx:1.27-alpine: Debian's nginx, configured as the official image is
# (conf.d/*.conf, logs to the container's output, in the foreground).
ARG BASE
FROM ${BASE}
RUN rm -f /etc/nginx/sites-enabled/default \
 && ln -sf /dev/stdout /var/log/nginx/access.log \
 && ln -sf /dev/stderr /var/log/nginx/error.log
CMD ["nginx", "-g", "daemon off;"]
