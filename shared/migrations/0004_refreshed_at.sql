-- When the connection's OAuth token was last refreshed: idle connections are refreshed in the
-- background before a provider expires their unused refresh token.
ALTER TABLE connections ADD COLUMN refreshed_at TEXT;
