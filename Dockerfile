# The catalogsync image: controller and sync-job entrypoints in one statically linked
# binary, CA certificates and a non-root user, FROM scratch: building it pulls nothing.
#
#   hack/image.sh                                        # compiles the binary, stages target/image/
#   docker build -f Dockerfile -t catalogsync:0.1.0 target/image
#
# The tests build the same image without Docker: hack/image/archive.py reads this file
# (FROM scratch, COPY, USER, EXPOSE, ENTRYPOINT, CMD only) and writes a docker-save archive.
FROM scratch
COPY rootfs/ /
# 65532: the usual "nonroot" uid/gid, numeric so the kubelet can verify runAsNonRoot.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/catalogsync"]
CMD ["controller"]
