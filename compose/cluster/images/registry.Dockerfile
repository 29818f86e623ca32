# deis/registry: the platform's Docker registry, from Debian's packages.
FROM deis/base
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-registry >/dev/null \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /usr/share/doc/*
