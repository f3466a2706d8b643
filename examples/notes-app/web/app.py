"""Notes over HTTP: POST /notes stores a note in Postgres, GET /notes lists them, every request
counts a hit in Redis. Standard library plus the base image's psycopg2 and redis; the backing
services' addresses come from the environment Spinup injects (DATABASE_URL, REDIS_URL).
"""

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg2
import redis

DATABASE_URL = os.environ["DATABASE_URL"]
CACHE = redis.Redis.from_url(os.environ["REDIS_URL"])
# A Spinup cache may only use keys under its prefix.
HITS_KEY = os.environ.get("REDIS_KEY_PREFIX", "") + "hits"
PORT = int(os.environ.get("PORT", "8000"))


def query(sql, *args):
    with psycopg2.connect(DATABASE_URL) as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall() if cur.description else []


query(
    "CREATE TABLE IF NOT EXISTS notes (id serial PRIMARY KEY, body text NOT NULL,"
    " created_at timestamptz NOT NULL DEFAULT now())"
)


class Handler(BaseHTTPRequestHandler):
    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        hits = CACHE.incr(HITS_KEY)
        if self.path.rstrip("/") == "/notes":
            rows = query("SELECT id, body FROM notes ORDER BY id")
            self.answer(200, {"notes": [{"id": i, "body": b} for i, b in rows], "hits": hits})
        elif self.path.rstrip("/") == "/summary":
            rows = query("SELECT count, at FROM summaries ORDER BY at DESC LIMIT 1")
            latest = {"count": rows[0][0], "at": rows[0][1].isoformat()} if rows else None
            self.answer(200, {"summary": latest, "hits": hits})
        else:
            self.answer(
                200,
                {
                    "greeting": os.environ.get("GREETING", "hello"),
                    "hits": hits,
                    "prefix": self.headers.get("X-Forwarded-Prefix"),
                },
            )

    def do_POST(self):
        CACHE.incr(HITS_KEY)
        if self.path.rstrip("/") != "/notes":
            self.answer(404, {"error": 'POST /notes with a JSON body {"body": ...}'})
            return
        length = int(self.headers.get("Content-Length") or 0)
        note = json.loads(self.rfile.read(length) or b"{}")
        (row,) = query("INSERT INTO notes (body) VALUES (%s) RETURNING id", str(note["body"]))
        self.answer(201, {"id": row[0], "body": note["body"]})

    def log_message(self, fmt, *args):
        print(self.address_string(), fmt % args, flush=True)


print(f"notes web listening on :{PORT}", flush=True)
ThreadingHTTPServer(("0.0.0.0", PORT), Handler).serve_forever()
