// The official SDK's resource-server path against a default Gatehouse
// instance: authenticateRequest(request, { acceptsToken: 'oauth_token' })
// from @clerk/backend, and getAuth(req, { acceptsToken: 'oauth_token' })
// behind @clerk/express's clerkMiddleware in a real Express server. A
// user-bound token is the user, a client_credentials token is its client,
// and garbage or another instance's token is refused. An opaque token
// (`oat_…`, which the SDK sends to the verify endpoint) is accepted, and
// refused at once once revoked.
// Usage: GATEHOUSE_URL=… GATEHOUSE_SECRET_KEY=… GATEHOUSE_PUBLISHABLE_KEY=…
//   USER_TOKEN=… USER_ID=… MACHINE_TOKEN=… CLIENT_ID=… FOREIGN_TOKEN=…
//   OPAQUE_TOKEN=… OPAQUE_CLIENT_ID=… node resource_server.mjs
import { createClerkClient } from "@clerk/backend";
import { clerkMiddleware, getAuth } from "@clerk/express";
import express from "express";
import assert from "node:assert/strict";

const env = process.env;
const options = {
  secretKey: env.GATEHOUSE_SECRET_KEY,
  publishableKey: env.GATEHOUSE_PUBLISHABLE_KEY,
  apiUrl: env.GATEHOUSE_URL,
};
const step = (name, detail = {}) => console.log(JSON.stringify({ step: name, ...detail }));
const clerk = createClerkClient(options);
const request = (token) =>
  new Request("https://api.example.com/mcp", {
    headers: token ? { authorization: `Bearer ${token}` } : {},
  });
const ask = (token) => clerk.authenticateRequest(request(token), { acceptsToken: "oauth_token" });

let state = await ask(env.USER_TOKEN);
assert.equal(state.isAuthenticated, true, `user token refused: ${state.reason} ${state.message}`);
let auth = state.toAuth();
assert.equal(auth.tokenType, "oauth_token");
assert.equal(auth.userId, env.USER_ID);
assert.ok(auth.scopes.includes("openid"), JSON.stringify(auth.scopes));
step("user token", { userId: auth.userId });

state = await ask(env.MACHINE_TOKEN);
assert.equal(state.isAuthenticated, true, `machine token refused: ${state.reason} ${state.message}`);
auth = state.toAuth();
assert.equal(auth.clientId, env.CLIENT_ID);
assert.equal(auth.userId, env.CLIENT_ID, "the subject of a client_credentials token is its client");
step("client_credentials token");

for (const [name, token] of [
  ["garbage", "not a token"],
  ["garbage JWT", "eyJhbGciOiJSUzI1NiJ9.e30.c2ln"],
  ["another instance's token", env.FOREIGN_TOKEN],
  ["no token", undefined],
]) {
  state = await ask(token);
  assert.equal(state.isAuthenticated, false, `${name} accepted`);
  step("refused", { name, reason: state.reason });
}

state = await ask(env.OPAQUE_TOKEN);
assert.equal(state.isAuthenticated, true, `opaque token refused: ${state.reason} ${state.message}`);
auth = state.toAuth();
assert.equal(auth.clientId, env.OPAQUE_CLIENT_ID);
assert.equal(auth.userId, env.OPAQUE_CLIENT_ID);
step("opaque token");

// The same through Express.
const app = express();
app.use(clerkMiddleware(options));
app.get("/mcp", (req, res) => {
  const a = getAuth(req, { acceptsToken: "oauth_token" });
  res.status(a.isAuthenticated ? 200 : 401).json({ userId: a.userId ?? null });
});
const server = await new Promise((resolve) => {
  const s = app.listen(0, "127.0.0.1", () => resolve(s));
});
const base = `http://127.0.0.1:${server.address().port}/mcp`;
const call = async (token) => {
  const res = await fetch(base, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  return [res.status, await res.json()];
};
try {
  assert.deepEqual(await call(env.USER_TOKEN), [200, { userId: env.USER_ID }]);
  assert.deepEqual(await call(env.MACHINE_TOKEN), [200, { userId: env.CLIENT_ID }]);
  for (const token of ["not a token", env.FOREIGN_TOKEN, undefined]) {
    const [status] = await call(token);
    assert.equal(status, 401);
  }
  assert.deepEqual(await call(env.OPAQUE_TOKEN), [200, { userId: env.OPAQUE_CLIENT_ID }]);
  step("express getAuth");

  // Revoked through the Backend API: both paths refuse it at once.
  const res = await fetch(`${env.GATEHOUSE_URL}/v1/oauth_applications/access_tokens/revoke`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${env.GATEHOUSE_SECRET_KEY}`,
      "content-type": "application/json",
    },
    body: JSON.stringify({ access_token: env.OPAQUE_TOKEN }),
  });
  assert.equal(res.status, 200, await res.text());
  state = await ask(env.OPAQUE_TOKEN);
  assert.equal(state.isAuthenticated, false, "a revoked opaque token was accepted");
  assert.equal((await call(env.OPAQUE_TOKEN))[0], 401, "express accepted a revoked opaque token");
  step("revoked opaque token refused", { reason: state.reason });
} finally {
  server.close();
}
console.log(JSON.stringify({ ok: true }));
