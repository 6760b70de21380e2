"""The PostgreSQL event store's schema: its tables and functions, as numbered migrations.

Each process brings the schema to the newest version when it first connects (one at a time,
under an advisory lock). Migrations are only ever added, never edited: a database records the
number of the last one it ran in ``twofold_schema``.
"""

# Advisory lock keys, (class, object): a class of its own for each purpose.
LOCK_STREAM = 7301  # with hashtext(stream_id): writers of one stream take turns reading its version
LOCK_SEQUENCER = (7302, 0)  # one sequencing step at a time, so positions only ever grow
LOCK_MIGRATION = (7303, 0)  # one process migrates the schema; the others wait, then see it done
CHANNEL = "twofold_events"  # NOTIFY channel; the payload is the highest position just numbered

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE events (
        id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        position       bigint UNIQUE,  -- NULL until the sequencing step numbers the committed row
        stream_id      text        NOT NULL,
        version        bigint      NOT NULL,
        event_id       text        NOT NULL UNIQUE,
        type           text        NOT NULL,
        schema_version integer     NOT NULL,
        data           json        NOT NULL,  -- json, not jsonb: stored exactly as written
        metadata       json        NOT NULL,
        recorded_at    timestamptz NOT NULL,
        category       text        NOT NULL,
        UNIQUE (stream_id, version)
    );
    CREATE INDEX events_unnumbered ON events (id) WHERE position IS NULL;
    CREATE INDEX events_by_category ON events (category, position);
    CREATE TABLE commands (
        command_id text   PRIMARY KEY,
        versions   json   NOT NULL,
        event_ids  text[] NOT NULL
    );
    """,
    # One sequencing step: number every committed, unnumbered event in insert order, above every
    # position handed out before, then report the positions of the caller's events. Numbering all
    # of them, not only the caller's, keeps each stream's versions in position order: an append to
    # a stream starts only after the previous one committed, so its events have higher ids. In a
    # VOLATILE function each statement takes a fresh snapshot, so those after the lock see every
    # earlier step and every append committed before it.
    f"""
    CREATE FUNCTION twofold_number(mine text[]) RETURNS TABLE (event_id text, event_position bigint)
    LANGUAGE plpgsql AS $$
    DECLARE
        top bigint;
        waiting bigint[];
    BEGIN
        PERFORM pg_advisory_xact_lock({LOCK_SEQUENCER[0]}, {LOCK_SEQUENCER[1]});
        SELECT coalesce(max(e.position), 0) INTO top FROM events AS e;
        SELECT array_agg(e.id ORDER BY e.id) INTO waiting FROM events AS e WHERE e.position IS NULL;
        IF waiting IS NOT NULL THEN
            -- Joined through the primary key, whatever the table's statistics say.
            UPDATE events SET position = top + w.n
            FROM unnest(waiting) WITH ORDINALITY AS w(id, n) WHERE events.id = w.id;
            PERFORM pg_notify('{CHANNEL}', (top + cardinality(waiting))::text);
        END IF;
        RETURN QUERY SELECT e.event_id, e.position FROM events AS e WHERE e.event_id = ANY(mine);
    END
    $$;
    """,
    # Migration 3: an append in one round trip. The function locks the streams, looks up the
    # command id, checks every expected version and inserts, all in the caller's single statement,
    # so an append costs one round trip and one commit before it is numbered. A wrong expected
    # version raises SQLSTATE TF409 with the write's index and the stream's actual version; nothing
    # is written. One row of NULLs back means the command id was already recorded.
    f"""
    CREATE FUNCTION twofold_append(
        command text, streams text[], expected bigint[], counts integer[], categories text[],
        event_ids text[], types text[], schema_versions integer[], datas text[], metadatas text[],
        recorded timestamptz
    ) RETURNS TABLE (stream_id text, stream_version bigint)
    LANGUAGE plpgsql AS $$
    DECLARE
        actual bigint;
        versions bigint[] := '{{}}';
        first integer := 1;
        last integer;
    BEGIN
        -- Sorted, so that two multi-stream appends can never deadlock.
        PERFORM pg_advisory_xact_lock({LOCK_STREAM}, hashtext(s)) FROM (SELECT unnest(streams) AS s ORDER BY 1) AS o;
        -- Looked up under the stream locks, so a concurrent twin of this command is seen once it commits.
        IF command IS NOT NULL AND EXISTS (SELECT 1 FROM commands AS c WHERE c.command_id = command) THEN
            RETURN QUERY SELECT NULL::text, NULL::bigint;
            RETURN;
        END IF;
        FOR i IN 1 .. cardinality(streams) LOOP
            SELECT coalesce(max(e.version), 0) INTO actual FROM events AS e WHERE e.stream_id = streams[i];
            IF expected[i] IS NOT NULL AND actual <> expected[i] THEN
                RAISE EXCEPTION 'wrong expected version for stream %', streams[i]
                    USING ERRCODE = 'TF409', DETAIL = json_build_object('write', i - 1, 'actual', actual)::text;
            END IF;
            last := first + counts[i] - 1;
            INSERT INTO events
                (stream_id, version, event_id, type, schema_version, data, metadata, recorded_at, category)
            SELECT streams[i], actual + u.n, u.e, u.t, u.s, u.d::json, u.m::json, recorded, categories[i]
            FROM unnest(event_ids[first:last], types[first:last], schema_versions[first:last], datas[first:last],
                        metadatas[first:last]) WITH ORDINALITY AS u(e, t, s, d, m, n)
            ORDER BY u.n;  -- ids, and so positions, follow the order of the events in the append
            versions := versions || (actual + counts[i]);
            first := last + 1;
        END LOOP;
        IF command IS NOT NULL THEN
            INSERT INTO commands (command_id, versions, event_ids)
            VALUES (command, (SELECT json_object_agg(s, v) FROM unnest(streams, versions) AS w(s, v)), event_ids);
        END IF;
        RETURN QUERY SELECT * FROM unnest(streams, versions);
    END
    $$;
    """,
    # Migration 3, continued: a step whose caller's events a concurrent step already numbered
    # returns at once, instead of queueing for the sequencer lock to number nothing.
    f"""
    CREATE OR REPLACE FUNCTION twofold_number(mine text[]) RETURNS TABLE (event_id text, event_position bigint)
    LANGUAGE plpgsql AS $$
    DECLARE
        top bigint;
        waiting bigint[];
    BEGIN
        IF mine IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM events AS e WHERE e.event_id = ANY(mine) AND e.position IS NULL
        ) THEN
            RETURN QUERY SELECT e.event_id, e.position FROM events AS e WHERE e.event_id = ANY(mine);
            RETURN;
        END IF;
        PERFORM pg_advisory_xact_lock({LOCK_SEQUENCER[0]}, {LOCK_SEQUENCER[1]});
        SELECT coalesce(max(e.position), 0) INTO top FROM events AS e;
        SELECT array_agg(e.id ORDER BY e.id) INTO waiting FROM events AS e WHERE e.position IS NULL;
        IF waiting IS NOT NULL THEN
            -- Joined through the primary key, whatever the table's statistics say.
            UPDATE events SET position = top + w.n
            FROM unnest(waiting) WITH ORDINALITY AS w(id, n) WHERE events.id = w.id;
            PERFORM pg_notify('{CHANNEL}', (top + cardinality(waiting))::text);
        END IF;
        RETURN QUERY SELECT e.event_id, e.position FROM events AS e WHERE e.event_id = ANY(mine);
    END
    $$;
    """,
    # Migration 5: one secret key per subject, for its personal fields (twofold.personal);
    # deleting the row forgets them.
    """
    CREATE TABLE subject_keys (
        subject text  PRIMARY KEY,
        key     bytea NOT NULL
    );
    """,
    # Migration 6: indexes for inspection - a category's streams, listed by id, and a correlation's
    # events. The expression is spelt as READ_CORRELATED spells it, or the planner would not use it.
    """
    CREATE INDEX IF NOT EXISTS events_by_category_stream ON events (category, stream_id);
    CREATE INDEX IF NOT EXISTS events_by_correlation ON events ((metadata ->> 'correlation_id'), position);
    """,
)
