# deis/database: the platform's Postgres, from Debian's packages.
FROM deis/base
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /usr/share/doc/*
