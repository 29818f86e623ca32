# deis/lb: the front door: HAProxy in front of the routers, from Debian's packages.
FROM deis/base
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends haproxy >/dev/null \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /usr/share/doc/*
