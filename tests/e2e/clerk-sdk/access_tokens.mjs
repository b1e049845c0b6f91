// The official SDK's idPOAuthAccessToken.verify against a running Gatehouse:
// a client_credentials token from the token endpoint verifies (and its key is
// in jwks.getJwks()), a revoked one says so, a malformed one is a 404.
// Usage: GATEHOUSE_URL=… GATEHOUSE_SECRET_KEY=sk_test_… node access_tokens.mjs
import { createClerkClient } from "@clerk/backend";
import assert from "node:assert/strict";

const clerk = createClerkClient({
  secretKey: process.env.GATEHOUSE_SECRET_KEY,
  apiUrl: process.env.GATEHOUSE_URL,
});
const step = (name, detail = {}) => console.log(JSON.stringify({ step: name, ...detail }));

const app = await clerk.oauthApplications.create({
  name: "SDK verify",
  redirectUris: ["https://client.example/callback"],
  scopes: "openid email",
});
const basic = "Basic " + Buffer.from(`${app.clientId}:${app.clientSecret}`).toString("base64");
const form = (fields) => ({
  method: "POST",
  headers: { authorization: basic, "content-type": "application/x-www-form-urlencoded" },
  body: new URLSearchParams(fields).toString(),
});
// The token service learns of the new client from its event.
let res;
for (let i = 0; i < 200; i++) {
  res = await fetch(app.tokenFetchUrl, form({ grant_type: "client_credentials", resource: "https://api.example.com" }));
  if (res.status === 200) break;
  await new Promise((r) => setTimeout(r, 50));
}
assert.equal(res.status, 200);
const { access_token } = await res.json();
step("token");

// The keys behind it, as the SDK fetches them for networkless verification.
const { kid } = JSON.parse(Buffer.from(access_token.split(".")[0], "base64url").toString());
const jwks = await clerk.jwks.getJwks();
assert.ok(jwks.keys.some((k) => k.kid === kid), JSON.stringify(jwks));
step("jwks", { kid });

const t = await clerk.idPOAuthAccessToken.verify(access_token, { audience: "https://api.example.com" });
assert.equal(t.clientId, app.clientId);
assert.equal(t.subject, app.clientId);
assert.deepEqual(t.scopes, ["openid", "email"]);
assert.equal(t.revoked, false);
assert.equal(t.expired, false);
assert.ok(t.expiration > Date.now());
assert.deepEqual(t.aud, ["https://api.example.com"]);
step("verify", { id: t.id });

const revokeUrl = app.tokenFetchUrl.replace(/\/oauth\/token$/, "/oauth/revoke");
assert.equal((await fetch(revokeUrl, form({ token: access_token }))).status, 200);
const revoked = await clerk.idPOAuthAccessToken.verify(access_token);
assert.equal(revoked.revoked, true);
assert.equal(revoked.revocationReason, "revoked");
step("revoked");

await assert.rejects(clerk.idPOAuthAccessToken.verify("not-a-token"), (e) => e.status === 404);
step("malformed");
console.log(JSON.stringify({ ok: true }));
