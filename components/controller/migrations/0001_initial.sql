-- The platform's state. Only the controller reads or writes these tables.
-- Owners in history tables (configs, builds, releases) are usernames, not foreign keys, so the
-- history of an app stays readable after a user is removed.

CREATE TABLE users (
    id            BIGSERIAL PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    email         TEXT NOT NULL DEFAULT '',
    first_name    TEXT NOT NULL DEFAULT '',
    last_name     TEXT NOT NULL DEFAULT '',
    password_hash TEXT NOT NULL,
    is_superuser  BOOLEAN NOT NULL DEFAULT FALSE,
    date_joined   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- API tokens, stored as SHA-256 hashes: a leaked database does not leak working tokens.
CREATE TABLE tokens (
    token_hash BYTEA PRIMARY KEY,
    user_id    BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX tokens_user ON tokens (user_id);

CREATE TABLE keys (
    id          BIGSERIAL PRIMARY KEY,
    user_id     BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    public      TEXT NOT NULL,
    fingerprint TEXT NOT NULL UNIQUE,
    created     TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (user_id, name)
);

CREATE TABLE apps (
    id         BIGSERIAL PRIMARY KEY,
    uuid       UUID NOT NULL UNIQUE,
    name       TEXT NOT NULL UNIQUE,
    owner_id   BIGINT NOT NULL REFERENCES users(id),
    -- The formation: process type -> containers wanted.
    structure  JSONB NOT NULL DEFAULT '{}',
    -- Bumped on every scale, so consumers can drop an older formation arriving late.
    structure_generation BIGINT NOT NULL DEFAULT 0,
    created    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Every version of an app's config; releases point at the one they run with.
CREATE TABLE configs (
    uuid    UUID PRIMARY KEY,
    app_id  BIGINT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    owner   TEXT NOT NULL,
    "values" JSONB NOT NULL DEFAULT '{}',
    memory  JSONB NOT NULL DEFAULT '{}',
    cpu     JSONB NOT NULL DEFAULT '{}',
    tags    JSONB NOT NULL DEFAULT '{}',
    created TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE builds (
    uuid     UUID PRIMARY KEY,
    app_id   BIGINT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    owner    TEXT NOT NULL,
    image    TEXT NOT NULL,
    sha      TEXT NOT NULL DEFAULT '',
    procfile JSONB NOT NULL DEFAULT '{}',
    kind     TEXT NOT NULL,
    created  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX builds_app ON builds (app_id, created);

CREATE TABLE releases (
    uuid        UUID PRIMARY KEY,
    app_id      BIGINT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    owner       TEXT NOT NULL,
    version     INTEGER NOT NULL CHECK (version > 0),
    build_uuid  UUID REFERENCES builds(uuid),
    config_uuid UUID NOT NULL REFERENCES configs(uuid),
    summary     TEXT NOT NULL,
    created     TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- No duplicate version per app, whatever the concurrency.
    UNIQUE (app_id, version)
);

CREATE TABLE domains (
    id      BIGSERIAL PRIMARY KEY,
    app_id  BIGINT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    owner   TEXT NOT NULL,
    domain  TEXT NOT NULL UNIQUE,
    created TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE certs (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    owner_id    BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    common_name TEXT NOT NULL,
    san         JSONB NOT NULL DEFAULT '[]',
    certificate TEXT NOT NULL,
    key         TEXT NOT NULL,
    starts      TIMESTAMPTZ NOT NULL,
    expires     TIMESTAMPTZ NOT NULL,
    issuer      TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    created     TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Which certificate serves which domain (a domain has at most one).
CREATE TABLE cert_domains (
    cert_id BIGINT NOT NULL REFERENCES certs(id) ON DELETE CASCADE,
    domain  TEXT NOT NULL UNIQUE REFERENCES domains(domain) ON DELETE CASCADE
);

-- Apps shared with users other than their owner.
CREATE TABLE perms (
    app_id  BIGINT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (app_id, user_id)
);

-- Events written in the same transaction as the change they describe, published to NATS by the
-- relay afterwards. The id is the message id, so a publish repeated after a crash is dropped by
-- JetStream's duplicate window and by consumers.
CREATE TABLE outbox (
    id        UUID PRIMARY KEY,
    seq       BIGSERIAL NOT NULL UNIQUE,
    kind      SMALLINT NOT NULL,
    payload   BYTEA NOT NULL,
    created   TIMESTAMPTZ NOT NULL DEFAULT now(),
    published TIMESTAMPTZ
);
CREATE INDEX outbox_pending ON outbox (seq) WHERE published IS NULL;
