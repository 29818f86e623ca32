-- Failed logins and wrong admin codes, shared by every controller: with a controller on every
-- node, a guesser's next request may reach another one, so counts kept in one process's memory
-- would give each guesser three times the attempts, and a lockout would hold on one node only.
-- `key` is 'u' and the SHA-256 of a username, or 'a' and a client address (an IPv6 /64).
CREATE TABLE login_lockouts (
    key          BYTEA PRIMARY KEY,
    failures     INTEGER NOT NULL,
    last_failure TIMESTAMPTZ NOT NULL,
    locked_until TIMESTAMPTZ
);
