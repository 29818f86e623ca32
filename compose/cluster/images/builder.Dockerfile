# deis/builder: the builder's release binary and the buildpacks it ships, on the base image
# (which has git, for `git receive-pack`).
FROM deis/base
ARG COMPONENT
COPY ${COMPONENT} /usr/local/bin/${COMPONENT}
COPY buildpacks /usr/share/deis/buildpacks
