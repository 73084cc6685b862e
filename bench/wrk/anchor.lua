-- The anchor: GET /health/live/, the minimal Django view (no database, cache or session),
-- through the same nginx and gunicorn workers as the scenarios.
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "common.lua")

wrk.method = "GET"
wrk.path = "/health/live/"
