/*  wrk_db_pg_schema: the PostgreSQL schema of the worker's saves, its
    version, and the statements that write it. wrk_db_pg runs
    wrk_db_pg_setup_sql on every new connection and then only the prepared
    statements named here.

    Set-up (one simple query): in one transaction under an advisory lock
    (workers starting together on a new database queue up instead of
    racing), create mandrill_schema_version if missing, read the highest
    version, create the schema when it is 0, fail with "the database has
    Mandrill schema version N; this worker knows version 2" when it is
    newer, migrate it when it is older; commit; then prepare the
    statements for this session. A database at the current version is not
    touched (no row, no DDL). A migration from version N is one more IF
    branch in the same block; each adds its row to mandrill_schema_version.

    Migrations: 1 -> 2 adds the column publisher (ALTER TABLE ADD COLUMN
    of a nullable column without a default: no table rewrite, old rows
    NULL).

    Schema version 2:

      CREATE TABLE mandrill_schema_version (
          version     integer PRIMARY KEY,
          applied_at  timestamptz NOT NULL DEFAULT now ()
      );
      CREATE TABLE restarts (
          message_id      text PRIMARY KEY,      -- a redelivered save is an upsert
          instance_name   text NOT NULL,
          hostname        text NOT NULL,
          attributes      jsonb,                 -- NULL when the request had none
          attempt         integer NOT NULL,      -- delivery attempt of the last save
          worker          text NOT NULL,         -- key name (CURVE) or --name of the last saver
          received_at     bigint NOT NULL,       -- unix ms the worker got the delivery
          saved_at        bigint NOT NULL,       -- unix ms, server clock, at the last save
          restart_outcome text,                  -- NULL until known
          outcome_at      bigint,                -- unix ms the outcome was recorded
          saves           integer NOT NULL,      -- times saved (1 normally)
          publisher       text                   -- since v2: the publisher's key name, or NULL
      );

    The columns and their units are the SQLite store's, so the same
    queries work on both; message_id is text, not uuid, so that no value
    the server would reject can fail a whole group of saves.
*/
#ifndef WRK_DB_PG_SCHEMA_H_INCLUDED
#define WRK_DB_PG_SCHEMA_H_INCLUDED

#define WRK_DB_PG_SCHEMA_VERSION 2

//  Upsert of many rows in one statement, from arrays of equal length:
//  $1 message_id text[], $2 instance_name text[], $3 hostname text[],
//  $4 attributes jsonb[], $5 attempt integer[], $6 worker text,
//  $7 received_at bigint[], $8 publisher text[]. A message_id may appear only once per call
//  (ON CONFLICT cannot touch a row twice in one statement).
#define WRK_DB_PG_SAVE_MANY "mandrill_save_many"

//  $1 message_id, $2 restart_outcome, $3 outcome_at.
#define WRK_DB_PG_OUTCOME "mandrill_outcome"

//  The set-up query (several statements; see above).
extern const char *wrk_db_pg_setup_sql;

#endif
