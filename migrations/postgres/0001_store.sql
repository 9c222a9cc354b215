-- Cardinal's store (PostgreSQL): every card returned, every silent and candidate outcome, every call,
-- and the feedback EHRs send. Times are Unix milliseconds (UTC). No patient id is stored: only a
-- keyed HMAC of it (`patient_key`), enough to count repeats per patient.
CREATE TABLE calls (
    id            TEXT PRIMARY KEY,
    service_id    TEXT NOT NULL,
    rule_set      TEXT NOT NULL,
    called_at     BIGINT NOT NULL,
    hook_instance TEXT NOT NULL
);
CREATE INDEX calls_by_time ON calls (called_at, service_id);

CREATE TABLE cards (
    uuid          TEXT PRIMARY KEY,
    call_id       TEXT NOT NULL,
    service_id    TEXT NOT NULL,
    rule_id       TEXT NOT NULL,
    rule_version  TEXT NOT NULL,
    rule_set      TEXT NOT NULL,
    -- active (returned to the EHR), silent, candidate, or suppressed (a repeat held back)
    mode          TEXT NOT NULL,
    indicator     TEXT NOT NULL,
    summary       TEXT NOT NULL,
    issued_at     BIGINT NOT NULL,
    hook_instance TEXT NOT NULL,
    patient_key   TEXT
);
CREATE INDEX cards_by_time ON cards (issued_at);
CREATE INDEX cards_by_rule ON cards (service_id, rule_id, rule_version, issued_at);
CREATE INDEX cards_by_patient ON cards (patient_key, service_id, rule_id, issued_at);

CREATE TABLE feedback (
    card_uuid             TEXT NOT NULL,
    outcome               TEXT NOT NULL,
    outcome_timestamp     TEXT NOT NULL,
    override_system       TEXT,
    override_code         TEXT,
    override_display      TEXT,
    accepted_suggestions  BIGINT NOT NULL,
    received_at           BIGINT NOT NULL,
    PRIMARY KEY (card_uuid, outcome, outcome_timestamp)
);
CREATE INDEX feedback_by_time ON feedback (received_at);
