// A scimmy SCIM 2.0 server (npm `scimmy` + `scimmy-routers` on express), in memory, for
// catalogsync's interop tests: a second, independent SCIM implementation to run the same
// scenarios against as scim2-server. Loopback only; bearer token from SCIM_TOKEN; prints
// `SCIMMY_READY port=<n>` once listening; exits when its stdin closes (the test died).
//
//   SCIM_TOKEN=secret node server.js [--port N] [--max-results N] [--no-bulk] [--ignore-filters]
//
// --ignore-filters advertises filtering but answers every filtered query with everything,
// as some servers do: what the client's check of a filtered answer is tested against.
"use strict";

const crypto = require("node:crypto");
const express = require("express");
const SCIMMY = require("scimmy").default ?? require("scimmy");
const SCIMMYRouters = require("scimmy-routers").default ?? require("scimmy-routers");

const args = process.argv.slice(2);
const opt = (name, dflt) => {
    const i = args.indexOf(name);
    return i >= 0 ? args[i + 1] : dflt;
};
const port = Number(opt("--port", "0"));
const maxResults = Number(opt("--max-results", "50"));
const bulk = !args.includes("--no-bulk");
const ignoreFilters = args.includes("--ignore-filters");
const token = process.env.SCIM_TOKEN;
if (!token) {
    console.error("SCIM_TOKEN is required");
    process.exit(2);
}

SCIMMY.Config.set({
    patch: true,
    filter: {supported: true, maxResults},
    bulk: {supported: bulk, maxOperations: 1000, maxPayloadSize: 1048576},
    sort: false,
    etag: false,
    changePassword: false,
});

// One store per resource type: id -> stored resource (plain JSON).
const stores = {Users: new Map(), Groups: new Map()};
// The attribute each type keeps unique, case-insensitively (RFC 7643 §4.1.1: userName).
const unique = {Users: "userName", Groups: "displayName"};
const requests = {};

function declare(type, Resource) {
    const store = stores[type];
    const key = unique[type];
    SCIMMY.Resources.declare(Resource)
        .egress((resource) => {
            if (resource.id) {
                const found = store.get(resource.id);
                if (!found) throw new SCIMMY.Types.Error(404, null, `Resource ${resource.id} not found`);
                return found;
            }
            const all = [...store.values()];
            return resource.filter && !ignoreFilters ? resource.filter.match(all) : all;
        })
        .ingress((resource, data) => {
            const doc = JSON.parse(JSON.stringify(data));
            const taken = [...store.values()].find(
                (r) => r.id !== resource.id && String(r[key]).toLowerCase() === String(doc[key]).toLowerCase(),
            );
            if (taken) throw new SCIMMY.Types.Error(409, "uniqueness", `${key} ${doc[key]} is taken`);
            const now = new Date().toISOString();
            if (resource.id) {
                const old = store.get(resource.id);
                if (!old) throw new SCIMMY.Types.Error(404, null, `Resource ${resource.id} not found`);
                const stored = {...doc, id: resource.id, meta: {...old.meta, lastModified: now}};
                store.set(resource.id, stored);
                return stored;
            }
            const id = crypto.randomUUID();
            const stored = {...doc, id, meta: {created: now, lastModified: now}};
            store.set(id, stored);
            return stored;
        })
        .degress((resource) => {
            if (!store.delete(resource.id)) throw new SCIMMY.Types.Error(404, null, `Resource ${resource.id} not found`);
            // A deleted user leaves every group (RFC 7644 §3.6 leaves it to the server).
            if (type === "Users") {
                for (const g of stores.Groups.values()) {
                    g.members = (g.members ?? []).filter((m) => m.value !== resource.id);
                }
            }
        });
}
declare("Users", SCIMMY.Resources.User);
declare("Groups", SCIMMY.Resources.Group);

const app = express();
// Requests by method and endpoint, e.g. "POST Bulk".
app.use((req, _res, next) => {
    const key = `${req.method} ${req.path.split("/")[3] ?? ""}`;
    requests[key] = (requests[key] ?? 0) + 1;
    next();
});
app.use(
    "/scim/v2",
    new SCIMMYRouters({
        type: "bearer",
        handler: (req) => {
            if (req.header("Authorization") !== `Bearer ${token}`) throw new Error("Authorization failed");
            return "catalogsync-tests";
        },
    }),
);
// Test helpers beside the SCIM API: request counts.
app.get("/_admin/stats", (req, res) => {
    if (req.header("Authorization") !== `Bearer ${token}`) return res.status(401).end();
    res.json({requests, users: stores.Users.size, groups: stores.Groups.size});
});

const server = app.listen(port, "127.0.0.1", () => {
    console.log(`SCIMMY_READY port=${server.address().port}`);
});
if (args.includes("--exit-on-stdin-eof")) {
    process.stdin.on("end", () => process.exit(0));
    process.stdin.on("close", () => process.exit(0));
    process.stdin.resume();
}
