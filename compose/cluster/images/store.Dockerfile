# deis/store: the platform's object store, Ceph 16.2 (Pacific) from Debian's packages, started
# without cephadm (it runs Ceph from container images, which nothing here can pull): one container
# per node runs that node's monitor, manager, OSD and S3 gateway (files/store-entry). curl is for
# files/store-users, which makes the S3 users' buckets with it (SigV4).
FROM deis/base
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      ceph-mon ceph-mgr ceph-osd radosgw curl >/dev/null \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /usr/share/doc/*
