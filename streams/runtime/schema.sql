-- The pipeline's tables in PostgreSQL. Applied by every worker at start; every statement is
-- idempotent. Times are timestamptz; every write is keyed so that a replayed batch changes nothing.

-- Deduplication (streams/ingest/dedupe.py, docs/processors.md "Deduplication window"): an event's
-- time and id, in the partition of its event day, while the log can deliver it again; a day
-- partition is dropped whole once its day leaves the window. Late arrivals (events already older
-- than the window) in the default partition, deleted one window after they were applied.
-- The key leads with the event's time, not its random id: events arrive roughly in time order, so
-- a batch's keys land in few index pages, and the cost of an insert does not grow with the
-- partition (a random key touches a page per event, and after every checkpoint writes that page
-- whole to the WAL: docs/performance.md "Cost as the work grows").
-- Tables of before, set aside at an upgrade and still consulted until one window has passed since
-- (processed_events_before), then dropped by the tick: the unpartitioned table that kept every id
-- for ever, and the day-partitioned table keyed by the id first (processed_events_v1).
CREATE TABLE IF NOT EXISTS processed_events_before (
    name         text PRIMARY KEY,
    set_aside_at timestamptz NOT NULL
);
DO $$
DECLARE
    part text;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_class WHERE relname = 'processed_events' AND relkind = 'r'
               AND relnamespace = 'public'::regnamespace) THEN
        ALTER TABLE processed_events RENAME TO processed_events_unbounded;
        ALTER TABLE processed_events_unbounded RENAME CONSTRAINT processed_events_pkey
            TO processed_events_unbounded_pkey;
        INSERT INTO processed_events_before VALUES ('processed_events_unbounded', now());
    END IF;
    IF to_regclass('processed_events_unbounded_since') IS NOT NULL THEN
        INSERT INTO processed_events_before
            SELECT 'processed_events_unbounded', max(set_aside_at) FROM processed_events_unbounded_since
            ON CONFLICT DO NOTHING;
        DROP TABLE processed_events_unbounded_since;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_class WHERE relname = 'processed_events' AND relkind = 'p'
               AND relnamespace = 'public'::regnamespace)
       AND NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('processed_events')
                       AND attname = 'occurred_at' AND NOT attisdropped) THEN
        FOR part IN SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                    WHERE i.inhparent = 'processed_events'::regclass LOOP
            EXECUTE format('ALTER TABLE %I RENAME TO %I', part, 'processed_events_v1_' || substr(part, 18));
        END LOOP;
        ALTER TABLE processed_events RENAME TO processed_events_v1;
        ALTER TABLE processed_events_v1 RENAME CONSTRAINT processed_events_pkey TO processed_events_v1_pkey;
        INSERT INTO processed_events_before VALUES ('processed_events_v1', now());
    END IF;
END $$;
CREATE TABLE IF NOT EXISTS processed_events (
    event_id     uuid NOT NULL,
    event_day    date NOT NULL,
    occurred_at  timestamptz NOT NULL,  -- the event's own time: a copy of an event has the same
    topic        text NOT NULL,
    processed_at timestamptz NOT NULL,  -- the pipeline's clock
    PRIMARY KEY (occurred_at, event_id, event_day)
) PARTITION BY RANGE (event_day);
CREATE TABLE IF NOT EXISTS processed_events_late PARTITION OF processed_events DEFAULT;

-- The day partition for ``d``, made ahead of the batch that needs it (streams/ingest/dedupe.py),
-- unless ``d`` is before ``oldest`` (left the window: such events go to the late partition). Named
-- processed_events_pYYYYMMDD: the drop below reads the day from the name. Two workers racing both
-- succeed; a day whose late rows are already in the default partition (another worker's clock
-- ahead of this one's) stays there. SECURITY DEFINER: made as the table's owner
-- (lifecycle/core/pgroles.py), without CREATE on the schema for the worker.
CREATE OR REPLACE FUNCTION processed_events_partition(d date, oldest date) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    name text := 'processed_events_p' || to_char(d, 'YYYYMMDD');
BEGIN
    IF d >= oldest AND to_regclass(name) IS NULL THEN
        BEGIN
            EXECUTE format('CREATE TABLE %I PARTITION OF processed_events FOR VALUES FROM (%L) TO (%L)',
                           name, d, d + 1);
        EXCEPTION WHEN duplicate_table OR unique_violation OR check_violation THEN
            NULL;
        END;
    END IF;
END $$;

-- Records the events (ids, their days and times) as applied and returns the ids not applied
-- before, in one statement (the batch's transaction); the tables of before, while they exist, are
-- consulted too.
DROP FUNCTION IF EXISTS processed_events_insert(uuid[], date[], text, timestamptz);
CREATE OR REPLACE FUNCTION processed_events_insert(ids uuid[], days date[], times timestamptz[], from_topic text,
                                                   at timestamptz)
RETURNS SETOF uuid LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
    q text := 'INSERT INTO processed_events AS p (event_id, event_day, occurred_at, topic, processed_at) '
              'SELECT t.i, t.d, t.a, $4, $5 FROM unnest($1, $2, $3) AS t(i, d, a) WHERE true';
    before record;
BEGIN
    FOR before IN SELECT b.name, EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(b.name)
                                                 AND attname = 'event_day' AND NOT attisdropped) AS by_day
                  FROM processed_events_before b WHERE to_regclass(b.name) IS NOT NULL LOOP
        q := q || format(' AND NOT EXISTS (SELECT 1 FROM %I o WHERE o.event_id = t.i%s)', before.name,
                         CASE WHEN before.by_day THEN ' AND o.event_day = t.d' ELSE '' END);
    END LOOP;
    RETURN QUERY EXECUTE q || ' ON CONFLICT DO NOTHING RETURNING p.event_id' USING ids, days, times, from_topic, at;
END $$;

-- Drops every day partition before ``oldest`` (whole tables: no row is scanned), and each table of
-- before once it was set aside before ``cutoff``; returns how many tables it dropped.
CREATE OR REPLACE FUNCTION processed_events_drop_before(oldest date, cutoff timestamptz) RETURNS int
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    part text;
    dropped int := 0;
BEGIN
    FOR part IN
        SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'processed_events'::regclass AND c.relname ~ '^processed_events_p[0-9]{8}$'
          AND to_date(substr(c.relname, 19), 'YYYYMMDD') < oldest
    LOOP
        EXECUTE format('DROP TABLE IF EXISTS %I', part);
        dropped := dropped + 1;
    END LOOP;
    FOR part IN DELETE FROM processed_events_before WHERE set_aside_at < cutoff RETURNING name LOOP
        EXECUTE format('DROP TABLE IF EXISTS %I', part);
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END $$;

-- How far the intake has applied each input partition, written in the transaction that applied
-- the batch (streams/ingest/loop.py): a restarted worker resumes exactly here.
CREATE TABLE IF NOT EXISTS intake_offsets (
    consumer_group text NOT NULL,
    topic          text NOT NULL,
    partition      int NOT NULL,
    next_offset    bigint NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);
-- A digest of the last record applied (the one at next_offset - 1): on assignment the intake reads
-- that offset again and compares, so a log that was replaced (a restarted embedded broker, a
-- recreated topic, a restore) is recognised even when it has grown past the stored position.
ALTER TABLE intake_offsets ADD COLUMN IF NOT EXISTS last_digest bytea;

CREATE TABLE IF NOT EXISTS clock_state (
    id            int PRIMARY KEY CHECK (id = 1),
    event_time_ms bigint NOT NULL
);

CREATE TABLE IF NOT EXISTS outbox (
    id         bigserial PRIMARY KEY,
    topic      text NOT NULL,
    key        bytea,
    value      bytea,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The relay is woken when a transaction that queued records commits (streams/runtime/wakeup.py): one
-- notification per statement, and PostgreSQL folds a transaction's identical ones into one.
CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('lifecycle_outbox', '');
    RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER outbox_notify AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

-- Accounts: the policy's "maintain your accounts with us".
CREATE TABLE IF NOT EXISTS accounts (
    account_id            text PRIMARY KEY,
    status                text NOT NULL,
    email                 text,
    first_name            text,
    last_name             text,
    phone                 text,
    email_verified        boolean NOT NULL DEFAULT false,
    processing_restricted boolean NOT NULL DEFAULT false,
    closure_via           text,
    registered_at         timestamptz,
    updated_at            timestamptz NOT NULL,
    closed_at             timestamptz
);

-- Legal holds in force ("resolve disputes and enforce our agreements"). A hold outlives the
-- account's closure: it is what keeps the covered categories; releasing it deletes the row.
CREATE TABLE IF NOT EXISTS legal_holds (
    account_id text PRIMARY KEY,
    set_at     timestamptz NOT NULL
);
ALTER TABLE accounts DROP COLUMN IF EXISTS legal_hold;

-- Session records: "login information, including the date and size of all files sent".
CREATE TABLE IF NOT EXISTS open_sessions (
    session_id    text PRIMARY KEY,
    account_id    text NOT NULL,
    started_at    timestamptz NOT NULL,
    last_event_at timestamptz NOT NULL,
    ip            text,
    domain        text,
    user_agent    text,
    browser       text,
    os            text,
    login_method  text NOT NULL,
    second_factor text
);
CREATE INDEX IF NOT EXISTS open_sessions_last_event ON open_sessions (last_event_at);

CREATE TABLE IF NOT EXISTS session_files (
    event_id       uuid PRIMARY KEY,
    session_id     text NOT NULL,
    account_id     text NOT NULL,
    transferred_at timestamptz NOT NULL,
    size_bytes     bigint NOT NULL,
    mime_type      text NOT NULL
);
CREATE INDEX IF NOT EXISTS session_files_session ON session_files (session_id);

-- One partition per calendar month of ended_at, so that retention drops an expired month whole
-- (deploy/retention.yaml, category session_logs) instead of deleting it row by row.
CREATE TABLE IF NOT EXISTS session_logs (
    session_id    text NOT NULL,
    account_id    text NOT NULL,
    started_at    timestamptz NOT NULL,
    ended_at      timestamptz NOT NULL,
    end_reason    text NOT NULL,
    login_method  text NOT NULL,
    second_factor text,
    ip            text,
    domain        text,
    user_agent    text,
    browser       text,
    os            text,
    file_count    bigint NOT NULL,
    total_bytes   bigint NOT NULL,
    files         jsonb NOT NULL,
    PRIMARY KEY (session_id, ended_at)
) PARTITION BY RANGE (ended_at);
CREATE INDEX IF NOT EXISTS session_logs_account ON session_logs (account_id);
CREATE INDEX IF NOT EXISTS session_logs_ended ON session_logs (ended_at);

-- The month partition holding ``t``, created on first use. Named session_logs_pYYYYMM: the
-- retention sweep reads the bounds from the name. Two workers racing to create it both succeed.
-- SECURITY DEFINER: the worker's role creates partitions as their owner
-- (lifecycle/core/pgroles.py), without CREATE on the schema itself.
CREATE OR REPLACE FUNCTION session_logs_partition(t timestamptz) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    lower_bound timestamptz := date_trunc('month', t AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    name text := 'session_logs_p' || to_char(t AT TIME ZONE 'UTC', 'YYYYMM');
BEGIN
    IF to_regclass(name) IS NULL THEN
        BEGIN
            EXECUTE format('CREATE TABLE %I PARTITION OF session_logs FOR VALUES FROM (%L) TO (%L)',
                           name, lower_bound, lower_bound + interval '1 month');
        EXCEPTION WHEN duplicate_table OR unique_violation THEN
            NULL;
        END;
    END IF;
    RETURN name;
END $$;

-- Security information: failed logins.
CREATE TABLE IF NOT EXISTS failed_logins (
    event_id       uuid PRIMARY KEY,
    account_id     text NOT NULL,
    occurred_at    timestamptz NOT NULL,
    ip             text,
    domain         text,
    user_agent     text,
    failure_reason text
);

-- Consent: the proof (append-only history) and the current state per subject and purpose.
CREATE TABLE IF NOT EXISTS consent_history (
    event_id       uuid PRIMARY KEY,
    subject_id     text NOT NULL,
    event_type     text NOT NULL,
    purposes       text[] NOT NULL,
    policy_version text,
    occurred_at    timestamptz NOT NULL,
    source         text NOT NULL
);
CREATE INDEX IF NOT EXISTS consent_history_subject ON consent_history (subject_id);

CREATE TABLE IF NOT EXISTS consent_current (
    subject_id     text NOT NULL,
    purpose        text NOT NULL,
    granted        boolean NOT NULL,
    given_at       timestamptz NOT NULL,
    expires_at     timestamptz,
    policy_version text,
    expired_at     timestamptz,
    PRIMARY KEY (subject_id, purpose)
);
CREATE INDEX IF NOT EXISTS consent_current_expiry ON consent_current (expires_at) WHERE granted AND expired_at IS NULL;

CREATE TABLE IF NOT EXISTS newsletter (
    subject_id text PRIMARY KEY,
    subscribed boolean NOT NULL,
    email      text,
    updated_at timestamptz NOT NULL
);

-- Who may receive marketing mail: subscribed, verified address, account active and not
-- restricted. Transactional mail does not consult this view (see streams/consent/mail.py).
CREATE OR REPLACE VIEW marketing_audience AS
SELECT a.account_id, a.email
FROM newsletter n
JOIN accounts a ON a.account_id = n.subject_id
WHERE n.subscribed
  AND a.email_verified
  AND NOT a.processing_restricted
  AND a.status NOT IN ('closure_requested', 'closed');

-- Web analytics. A page view waits in traffic_pending until its hourly bucket closes (the hour
-- plus a grace period), so that consent and restriction events that raced it on other topics are
-- applied first; the bucket is then judged, aggregated and its pending rows deleted. Identifiers
-- never leave this table and live at most an hour plus the grace period.
CREATE TABLE IF NOT EXISTS traffic_pending (
    event_id        uuid PRIMARY KEY,
    bucket_start    timestamptz NOT NULL,
    browser         text NOT NULL,
    os              text NOT NULL,
    referrer_domain text NOT NULL,
    mime_type       text NOT NULL,
    country         text NOT NULL,
    visitor_id      text NOT NULL,
    account_id      text,
    occurred_at     timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS traffic_pending_bucket ON traffic_pending (bucket_start);
CREATE TABLE IF NOT EXISTS traffic_aggregates (
    bucket_start    timestamptz NOT NULL,
    browser         text NOT NULL,
    os              text NOT NULL,
    referrer_domain text NOT NULL,
    mime_type       text NOT NULL,
    country         text NOT NULL,
    page_views      bigint NOT NULL,
    visitors        bigint NOT NULL,
    PRIMARY KEY (bucket_start, browser, os, referrer_domain, mime_type, country)
);
CREATE TABLE IF NOT EXISTS traffic_suppressed (
    bucket_start timestamptz PRIMARY KEY,
    buckets      bigint NOT NULL
);

-- Keys generated once per deployment when none is configured (LIFECYCLE_HASH_KEY).
CREATE TABLE IF NOT EXISTS pipeline_secrets (
    name  text PRIMARY KEY,
    value bytea NOT NULL
);

-- Identifiers seen together: an account and the visitor ids it used (erasure covers them all).
CREATE TABLE IF NOT EXISTS account_visitors (
    account_id text NOT NULL,
    visitor_id text NOT NULL,
    PRIMARY KEY (account_id, visitor_id)
);

-- The erasure ledger: written before anything is destroyed. account_id is kept only until the
-- request completes; the proof keeps the keyed hash.
CREATE TABLE IF NOT EXISTS erasure_stores (
    store         text PRIMARY KEY,
    registered_at timestamptz NOT NULL DEFAULT now(),
    active        boolean NOT NULL DEFAULT true
);
-- 'config': named in LIFECYCLE_ERASURE_STORES (a worker's start turns it off once it is not);
-- 'registered': joined with `lifecycle store add` (a store of another team), left with `store remove`.
ALTER TABLE erasure_stores ADD COLUMN IF NOT EXISTS origin text NOT NULL DEFAULT 'config';
CREATE TABLE IF NOT EXISTS erasure_requests (
    request_id   uuid PRIMARY KEY,
    account_id   text,
    account_hash text NOT NULL,
    subjects     text[],
    reason       text NOT NULL,
    legal_hold   boolean NOT NULL DEFAULT false,
    opened_at    timestamptz NOT NULL,
    deadline     timestamptz NOT NULL,
    completed_at timestamptz,
    state        text NOT NULL DEFAULT 'open'
);
CREATE INDEX IF NOT EXISTS erasure_requests_hash ON erasure_requests (account_hash);
CREATE INDEX IF NOT EXISTS erasure_requests_open ON erasure_requests (deadline) WHERE state = 'open';
CREATE TABLE IF NOT EXISTS erasure_progress (
    request_id      uuid NOT NULL REFERENCES erasure_requests ON DELETE CASCADE,
    store           text NOT NULL,
    status          text NOT NULL DEFAULT 'pending',
    items_erased    bigint NOT NULL DEFAULT 0,
    attempts        int NOT NULL DEFAULT 1,
    last_issued_at  timestamptz NOT NULL DEFAULT now(),
    acknowledged_at timestamptz,
    error           text,
    PRIMARY KEY (request_id, store)
);
CREATE TABLE IF NOT EXISTS erasure_proofs (
    request_id   uuid PRIMARY KEY,
    account_hash text NOT NULL,
    reason       text NOT NULL,
    opened_at    timestamptz NOT NULL,
    completed_at timestamptz NOT NULL,
    stores       jsonb NOT NULL
);
-- Crypto-shredding (lifecycle/core/datakeys.py): when the subjects' data keys were destroyed, and
-- the categories a legal hold kept.
ALTER TABLE erasure_requests ADD COLUMN IF NOT EXISTS keys_destroyed_at timestamptz;
ALTER TABLE erasure_requests ADD COLUMN IF NOT EXISTS keys_kept text[];
ALTER TABLE erasure_proofs ADD COLUMN IF NOT EXISTS keys_destroyed_at timestamptz;
ALTER TABLE erasure_proofs ADD COLUMN IF NOT EXISTS keys_kept text[];
-- Verified erasure (docs/erasure.md): after every store acknowledged, every store is asked to look
-- again (verify); complete needs all of them verified. A verification that finds data starts a new
-- round (round + 1: stores erase again instead of answering from their receipt of the first), and
-- a completed proof it contradicts is marked regressed until the new round completes. The keyed
-- hashes of the subjects stay, so that a completed erasure can be verified without its ids.
ALTER TABLE erasure_requests ADD COLUMN IF NOT EXISTS subject_hashes text[];
ALTER TABLE erasure_requests ADD COLUMN IF NOT EXISTS round int NOT NULL DEFAULT 0;
ALTER TABLE erasure_requests ADD COLUMN IF NOT EXISTS verify_issued_at timestamptz;
ALTER TABLE erasure_requests ADD COLUMN IF NOT EXISTS verify_attempts int NOT NULL DEFAULT 0;
ALTER TABLE erasure_progress ADD COLUMN IF NOT EXISTS verified_at timestamptz;
ALTER TABLE erasure_progress ADD COLUMN IF NOT EXISTS items_found bigint NOT NULL DEFAULT 0;
ALTER TABLE erasure_proofs ADD COLUMN IF NOT EXISTS state text NOT NULL DEFAULT 'complete';
ALTER TABLE erasure_proofs ADD COLUMN IF NOT EXISTS regressions int NOT NULL DEFAULT 0;
ALTER TABLE erasure_proofs ADD COLUMN IF NOT EXISTS regressed_at timestamptz;
ALTER TABLE erasure_proofs ADD COLUMN IF NOT EXISTS last_verified_at timestamptz;
ALTER TABLE erasure_proofs ADD COLUMN IF NOT EXISTS reverify_at timestamptz;
CREATE INDEX IF NOT EXISTS erasure_proofs_reverify ON erasure_proofs (reverify_at) WHERE state = 'complete';
-- Keyed hashes of every identifier of an erased account: late events are recognised without
-- keeping the identifiers themselves.
CREATE TABLE IF NOT EXISTS suppressed_subjects (
    subject_hash  text PRIMARY KEY,
    request_id    uuid NOT NULL,
    suppressed_at timestamptz NOT NULL DEFAULT now()
);

-- Retention (streams/retention/sweeps.py): the last order issued per category, and what each store
-- reported for it.
CREATE TABLE IF NOT EXISTS retention_orders (
    category  text PRIMARY KEY,
    order_id  uuid NOT NULL,
    cutoff    timestamptz NOT NULL,
    held      text[] NOT NULL,
    issued_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS retention_runs (
    store            text NOT NULL,
    category         text NOT NULL,
    order_id         uuid NOT NULL,
    cutoff           timestamptz NOT NULL,
    items_erased     bigint NOT NULL DEFAULT 0,
    oldest_remaining timestamptz,
    error            text,
    acknowledged_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (store, category)
);

-- hash_keys (fingerprints of the hash keys, never the keys) is created by lifecycle/core/keys.py: a
-- connector may check its key before any worker has applied this file.
-- A visitor id is suppressed only as long as the cookie that carries it can live (13 months);
-- an account id, which is never reused, for ever (expires_at NULL).
ALTER TABLE suppressed_subjects ADD COLUMN IF NOT EXISTS expires_at timestamptz;

-- Events accepted over HTTP, kept until the intake has applied them (in its batch transaction):
-- a 202 is durable even when the broker's log is lost (the embedded broker keeps it in memory).
-- sent_at NULL: to be (re)sent to its topic by the journal relay (streams/ingest/journal.py).
CREATE TABLE IF NOT EXISTS ingest_journal (
    event_id    uuid PRIMARY KEY,
    topic       text NOT NULL,
    key         bytea NOT NULL,
    value       bytea NOT NULL,
    accepted_at timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz
);
CREATE INDEX IF NOT EXISTS ingest_journal_unsent ON ingest_journal (accepted_at) WHERE sent_at IS NULL;

-- The postgres store's receipts (connectors/postgres/sink.py): one per request and round, written
-- in the transaction of its deletes.
CREATE TABLE IF NOT EXISTS erasure_receipts (
    request_id uuid NOT NULL, store text NOT NULL, status text NOT NULL, items bigint NOT NULL,
    erased_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (request_id, store));

-- Replays of completed erasures on a store restored from a backup (streams/erasure/restore_guard.py): what was
-- asked; each proof names the store it is being replayed on until that store answered, and counts
-- the replays that found data.
CREATE TABLE IF NOT EXISTS erasure_replays (
    replay_id    uuid PRIMARY KEY,
    store        text NOT NULL,
    since        timestamptz,
    requested_at timestamptz NOT NULL DEFAULT now(),
    proofs       int NOT NULL
);
ALTER TABLE erasure_proofs ADD COLUMN IF NOT EXISTS replay_id uuid;
ALTER TABLE erasure_proofs ADD COLUMN IF NOT EXISTS replay_store text;
ALTER TABLE erasure_proofs ADD COLUMN IF NOT EXISTS replays int NOT NULL DEFAULT 0;
ALTER TABLE erasure_proofs ADD COLUMN IF NOT EXISTS replayed_at timestamptz;

-- Consent receipts (streams/consent/receipts.py): the hash of the notice shown with each choice.
ALTER TABLE consent_history ADD COLUMN IF NOT EXISTS notice_hash text;
ALTER TABLE consent_current ADD COLUMN IF NOT EXISTS notice_hash text;
ALTER TABLE newsletter ADD COLUMN IF NOT EXISTS policy_version text;
ALTER TABLE newsletter ADD COLUMN IF NOT EXISTS notice_hash text;

-- Access requests (streams/access/requests.py, docs/access.md). account_id, subjects and the wrapped
-- private half of the answer key live only while the request is open; the archive (personal
-- data) until expires_at, or until the account's erasure opens.
CREATE TABLE IF NOT EXISTS access_requests (
    request_id     uuid PRIMARY KEY,
    account_hash   text NOT NULL,
    account_id     text,
    subjects       text[],
    opened_at      timestamptz NOT NULL,
    deadline       timestamptz NOT NULL,
    state          text NOT NULL DEFAULT 'open',  -- open, complete, expired
    box_key        bytea,
    answer_key     bytea NOT NULL,
    completed_at   timestamptz,
    archive        bytea,
    archive_sha256 text,
    expires_at     timestamptz
);
CREATE INDEX IF NOT EXISTS access_requests_hash ON access_requests (account_hash);
CREATE TABLE IF NOT EXISTS access_progress (
    request_id     uuid NOT NULL REFERENCES access_requests ON DELETE CASCADE,
    store          text NOT NULL,
    status         text NOT NULL DEFAULT 'pending',  -- pending, answered, failed
    parts          int,
    items          bigint,
    attempts       int NOT NULL DEFAULT 1,
    last_issued_at timestamptz NOT NULL DEFAULT now(),
    answered_at    timestamptz,
    error          text,
    PRIMARY KEY (request_id, store)
);
CREATE TABLE IF NOT EXISTS access_parts (
    request_id uuid NOT NULL,
    store      text NOT NULL,
    part       int NOT NULL,
    sealed     bytea NOT NULL,
    PRIMARY KEY (request_id, store, part),
    FOREIGN KEY (request_id, store) REFERENCES access_progress ON DELETE CASCADE
);

-- Certificates of erasure, version 2 (lifecycle/proofs.py, docs/security.md): each store's own signed
-- receipt statement (no account id in it) for the erase ack and the verify ack that counted.
ALTER TABLE erasure_progress ADD COLUMN IF NOT EXISTS ack_statement text;
ALTER TABLE erasure_progress ADD COLUMN IF NOT EXISTS ack_signature text;
ALTER TABLE erasure_progress ADD COLUMN IF NOT EXISTS verify_statement text;
ALTER TABLE erasure_progress ADD COLUMN IF NOT EXISTS verify_signature text;

-- The console's sign-in sessions (lifecycle/console/sessions.py): the SHA-256 of each session's
-- cookie (never the cookie), until it expires or its holder signs out; expired rows go at each
-- sign-in, so the table holds the sessions of the last LIFECYCLE_CONSOLE_SESSION_S at most.
CREATE TABLE IF NOT EXISTS console_sessions (
    session_hash bytea PRIMARY KEY,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
-- Certificates of erasure as issued (`lifecycle proof export`, lifecycle/proofs.py): signed public
-- documents with no personal data, kept so that the console can hand them out and check them.
CREATE TABLE IF NOT EXISTS erasure_certificates (
    request_id uuid PRIMARY KEY,
    issued_at  timestamptz NOT NULL DEFAULT now(),
    body       bytea NOT NULL
);

-- Global Privacy Control (streams/consent/processor.py, docs/processors.md): who decided the
-- current state ('choice': the person's own grant or withdrawal; 'gpc': the signal), and since
-- when this subject's browser has sent the signal (a grant made after it is an informed choice).
ALTER TABLE consent_current ADD COLUMN IF NOT EXISTS decided_by text NOT NULL DEFAULT 'choice';
ALTER TABLE consent_current ADD COLUMN IF NOT EXISTS gpc_since timestamptz;

-- Deadline extensions (GDPR Art. 12(3), streams/access/extensions.py): one per access or erasure request,
-- by one or two months, with the reason the person is told and who decided; notified_at once the
-- notice is queued on request-notices.
CREATE TABLE IF NOT EXISTS request_extensions (
    request_id        uuid PRIMARY KEY,
    kind              text NOT NULL,
    account_hash      text NOT NULL,
    months            int NOT NULL CHECK (months BETWEEN 1 AND 2),
    reason            text NOT NULL,
    requested_by      text NOT NULL,
    extended_at       timestamptz NOT NULL,
    previous_deadline timestamptz NOT NULL,
    deadline          timestamptz NOT NULL,
    notified_at       timestamptz
);

-- How long each store keeps its backups, as its owner declares it (`lifecycle store backups NAME
-- --days N`): a certificate states by when every backup that may hold an erased subject expires.
ALTER TABLE erasure_stores ADD COLUMN IF NOT EXISTS backup_days int;
