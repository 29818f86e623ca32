# deis/<component>: one of the platform's own components, its release binary on the base image.
# compose/images builds it with the binary alone in the build context.
FROM deis/base
ARG COMPONENT
COPY ${COMPONENT} /usr/local/bin/${COMPONENT}
