-- Credentials for reading app logs straight from the bus (`deis logs:credentials`): one per
-- user, issuing again replaces it. Only the SHA-256 hash of the password (a random token) is
-- kept, like API tokens': a leaked database does not leak working credentials. The NATS auth
-- callout checks a connecting log consumer against it and grants the drain subjects of the
-- apps the user may read at that moment.
CREATE TABLE log_credentials (
    user_id    BIGINT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    token_hash BYTEA NOT NULL,
    created    TIMESTAMPTZ NOT NULL DEFAULT now()
);
