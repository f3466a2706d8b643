"""A periodic job: every SUMMARY_EVERY_S seconds it counts the notes in Postgres, records the
count in a `summaries` table and publishes it in Redis. Shows a second, portless service using
the same injected DATABASE_URL and REDIS_URL.
"""

import os
import time

import psycopg2
import redis

DATABASE_URL = os.environ["DATABASE_URL"]
CACHE = redis.Redis.from_url(os.environ["REDIS_URL"])
PREFIX = os.environ.get("REDIS_KEY_PREFIX", "")
EVERY_S = float(os.environ.get("SUMMARY_EVERY_S", "5"))

with psycopg2.connect(DATABASE_URL) as conn, conn.cursor() as cur:
    cur.execute(
        "CREATE TABLE IF NOT EXISTS notes (id serial PRIMARY KEY, body text NOT NULL,"
        " created_at timestamptz NOT NULL DEFAULT now())"
    )
    cur.execute(
        "CREATE TABLE IF NOT EXISTS summaries (at timestamptz PRIMARY KEY DEFAULT now(),"
        " count integer NOT NULL)"
    )
print("notes worker started", flush=True)
while True:
    with psycopg2.connect(DATABASE_URL) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM notes")
        (count,) = cur.fetchone()
        cur.execute("INSERT INTO summaries (count) VALUES (%s)", (count,))
    CACHE.set(PREFIX + "notes:count", count)
    print(f"summary: {count} notes", flush=True)
    time.sleep(EVERY_S)
