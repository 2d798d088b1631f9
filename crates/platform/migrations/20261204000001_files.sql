-- The system of record: one row per uploaded file, written by api-svc before it answers 202 and
-- updated by worker-svc before a job completes in Redis.
CREATE TABLE files (
    id              uuid PRIMARY KEY,
    status          text NOT NULL CHECK (status IN ('queued', 'processing', 'done', 'failed')),
    -- The client's filename: metadata only, never part of a path.
    filename        text NOT NULL,
    content_type    text,
    size            bigint NOT NULL CHECK (size >= 0),
    sha256          text NOT NULL,
    detected_type   text,
    callback_url    text,
    -- Which API token uploaded it (a digest, never the token), scoping idempotency keys.
    token_id        text NOT NULL,
    idempotency_key text,
    -- Digest of what the request said (body and metadata): the same key with another request is 409.
    request_hash    text,
    result          jsonb,
    error           text,
    attempts        integer NOT NULL DEFAULT 0,
    delivery_state  text CHECK (delivery_state IN ('pending', 'delivered', 'failed')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);

CREATE UNIQUE INDEX files_idempotency ON files (token_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
-- Keyset pagination, newest first, optionally by status; and the reconciler's scan of `queued`.
CREATE INDEX files_created ON files (created_at DESC, id DESC);
CREATE INDEX files_status_created ON files (status, created_at DESC, id DESC);

-- Every attempt to deliver a callback: what the receiver answered and how long it took.
CREATE TABLE deliveries (
    id          bigserial PRIMARY KEY,
    file_id     uuid NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    webhook_id  text NOT NULL,
    attempt     integer NOT NULL,
    status_code integer,
    duration_ms integer NOT NULL,
    error       text,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deliveries_file ON deliveries (file_id, at);

-- A ledger outside the queue: one row per execution of a file job, for counting duplicates.
CREATE TABLE executions (
    id         bigserial PRIMARY KEY,
    file_id    uuid NOT NULL,
    attempt    integer NOT NULL,
    worker     text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    ended_at   timestamptz,
    outcome    text
);
CREATE INDEX executions_file ON executions (file_id);
