-- Several instances of campaignd share one database and one consumer group (README, "Several
-- instances"). Each process is a member of the cluster with checkpoint epochs of its own, and
-- each partition of the topic has an owner whose generation fences every checkpoint write.

-- One row per running (or once running) process. `epoch` is the member's last committed
-- checkpoint, written in the transaction that commits it: a retried write at or below it
-- committed already (its answer was lost) and is skipped; a campaign activated on this member
-- skips this member's transitions that the snapshot already holds. `address` is where other
-- members forward requests for the campaigns this member owns.
CREATE TABLE cluster_members (
    member      UUID PRIMARY KEY,
    address     TEXT,
    epoch       BIGINT NOT NULL DEFAULT 0 CHECK (epoch >= 0),
    started_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The owner of each partition and its generation, raised by every assignment. A checkpoint
-- holds its member's row lock, reads the rows of the partitions it writes, and is refused
-- when one names another member or an older generation: a member that lost a partition can
-- never write for it again. An assignment first locks the previous owners' member rows (a
-- checkpoint in flight finishes), then raises the generations.
CREATE TABLE partition_owners (
    cluster_id     TEXT NOT NULL,
    consumer_group TEXT NOT NULL,
    topic          TEXT NOT NULL,
    partition      INTEGER NOT NULL CHECK (partition >= 0),
    generation     BIGINT NOT NULL CHECK (generation > 0),
    member         UUID NOT NULL,
    assigned_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (cluster_id, consumer_group, topic, partition)
);

-- How far each partition is applied (the next offset), beside the offset to resume from
-- (which stays at the oldest parked report): a member that waits for the whole topic to be
-- applied reads the partitions other members own here.
ALTER TABLE kafka_offsets ADD COLUMN applied_offset BIGINT CHECK (applied_offset >= 0);

-- The single process-wide epoch is replaced by the members' own.
DROP TABLE checkpoint_state;

-- The message log's rows are ordered by a number taken from this sequence when their
-- checkpoint commits (members' epochs are their own and say nothing about each other's).
CREATE SEQUENCE message_log_order;
SELECT setval('message_log_order', GREATEST((SELECT max(epoch) FROM message_log), 1));
