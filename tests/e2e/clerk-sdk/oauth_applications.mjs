// The official SDK's oauthApplications API against a running Gatehouse.
// Usage: GATEHOUSE_URL=… GATEHOUSE_SECRET_KEY=sk_test_… node oauth_applications.mjs
import { createClerkClient } from "@clerk/backend";
import assert from "node:assert/strict";

const clerk = createClerkClient({
  secretKey: process.env.GATEHOUSE_SECRET_KEY,
  apiUrl: process.env.GATEHOUSE_URL,
});
const step = (name, detail = {}) => console.log(JSON.stringify({ step: name, ...detail }));

const app = await clerk.oauthApplications.create({
  name: "MCP client",
  redirectUris: ["https://client.example/callback", "http://127.0.0.1:33418/cb"],
  scopes: "openid profile email",
  public: false,
});
assert.ok(app.id.startsWith("oa_"));
assert.equal(app.name, "MCP client");
assert.equal(app.isPublic, false);
assert.equal(app.consentScreenEnabled, true);
assert.equal(app.pkceRequired, true);
assert.equal(app.dynamicallyRegistered, false);
assert.deepEqual(app.redirectUris, ["https://client.example/callback", "http://127.0.0.1:33418/cb"]);
assert.equal(app.scopes, "openid profile email");
assert.ok(app.clientId && app.clientSecret);
assert.ok(app.authorizeUrl.endsWith("/oauth/authorize"));
assert.ok(app.tokenFetchUrl.endsWith("/oauth/token"));
assert.ok(app.discoveryUrl.includes("/.well-known/oauth-authorization-server"));
step("create", { id: app.id });

const got = await clerk.oauthApplications.get(app.id);
assert.equal(got.clientId, app.clientId);
assert.equal(got.clientSecret, undefined);
step("get");

const second = await clerk.oauthApplications.create({ name: "Second", redirectUris: ["https://b.example/cb"], public: true });
assert.equal(second.isPublic, true);
assert.equal(second.clientSecret, undefined);
const page = await clerk.oauthApplications.list({ limit: 1, offset: 0, orderBy: "-created_at" });
assert.equal(page.totalCount, 2);
assert.equal(page.data.length, 1);
assert.equal(page.data[0].id, second.id);
const byName = await clerk.oauthApplications.list({ nameQuery: "mcp" });
assert.equal(byName.totalCount, 1);
step("list", { totalCount: page.totalCount });

const updated = await clerk.oauthApplications.update({
  oauthApplicationId: app.id,
  name: "MCP client v2",
  redirectUris: ["https://client.example/v2/callback"],
  scopes: "openid email",
});
assert.equal(updated.name, "MCP client v2");
assert.deepEqual(updated.redirectUris, ["https://client.example/v2/callback"]);
assert.equal(updated.scopes, "openid email");
step("update");

const rotated = await clerk.oauthApplications.rotateSecret(app.id);
assert.ok(rotated.clientSecret && rotated.clientSecret !== app.clientSecret);
step("rotateSecret");

const deleted = await clerk.oauthApplications.delete(app.id);
assert.equal(deleted.id, app.id);
assert.equal(deleted.deleted, true);
try {
  await clerk.oauthApplications.get(app.id);
  assert.fail("deleted application must be gone");
} catch (err) {
  assert.equal(err.status, 404);
}
await clerk.oauthApplications.delete(second.id);
step("delete");
console.log(JSON.stringify({ ok: true }));
