# A node of the cluster: Debian's Docker engine, run nested (see files/node-entry, mounted at /deis).
FROM deis/base
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      docker.io iptables fuse-overlayfs curl >/dev/null \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /usr/share/doc/*
VOLUME /var/lib/docker
ENTRYPOINT ["/usr/bin/tini", "--", "/deis/node-entry"]
