# deis/nats: the NATS member of a node (JetStream). The server is the pinned release that
# compose/nats-server fetches (Debian's 2.9 lost its JetStream meta leader after a member's
# restart); compose/images puts it in the build context.
FROM deis/base
COPY nats-server /usr/local/bin/nats-server
RUN nats-server --version
