# deis/database: the platform's Postgres under Patroni (one member per node, etcd as Patroni's
# store), from Debian's packages.
FROM deis/base
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql patroni >/dev/null \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /usr/share/doc/*
