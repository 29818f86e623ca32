-- Log drains: where the loggers forward each app's log stream. Published to etcd for the
-- loggers by domains_sync; Postgres holds the truth.
CREATE TABLE drains (
    id      UUID PRIMARY KEY,
    app_id  BIGINT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    owner   TEXT NOT NULL,
    url     TEXT NOT NULL,
    created TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (app_id, url)
);
