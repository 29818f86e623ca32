-- An outbox event that can never be published (larger than the bus takes, or refused for good)
-- is set aside: marked with why (and `published`, so the relay skips it), kept for operators.
ALTER TABLE outbox ADD COLUMN set_aside TEXT;
