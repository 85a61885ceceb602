# The pod sandbox image of the local node (hack/node.sh): pause.c built with gcc -static.
FROM scratch
COPY pause /pause
USER 65535:65535
ENTRYPOINT ["/pause"]
