// Drives a running Gatehouse with the official @clerk/backend SDK, unmodified.
// Usage: GATEHOUSE_URL=http://127.0.0.1:8080 GATEHOUSE_SECRET_KEY=sk_test_… node users.mjs
// Prints one JSON line per step; exits non-zero on the first failure.
import { createClerkClient } from "@clerk/backend";
import assert from "node:assert/strict";

const apiUrl = process.env.GATEHOUSE_URL;
const secretKey = process.env.GATEHOUSE_SECRET_KEY;
const clerk = createClerkClient({ secretKey, apiUrl });
const tag = Math.random().toString(36).slice(2, 10);

const step = (name, detail = {}) => console.log(JSON.stringify({ step: name, ...detail }));

const created = await clerk.users.createUser({
  emailAddress: [`sdk-${tag}@example.com`],
  password: "a long enough password",
  firstName: "Grace",
  lastName: "Hopper",
  externalId: `ext-${tag}`,
  publicMetadata: { plan: "pro", nested: { camelCaseKey: 1 } },
  privateMetadata: { internal: true },
});
assert.equal(created.firstName, "Grace");
assert.equal(created.lastName, "Hopper");
assert.equal(created.externalId, `ext-${tag}`);
assert.equal(created.passwordEnabled, true);
assert.equal(created.banned, false);
assert.equal(created.emailAddresses[0].emailAddress, `sdk-${tag}@example.com`);
assert.equal(created.primaryEmailAddress?.emailAddress, `sdk-${tag}@example.com`);
assert.deepEqual(created.publicMetadata, { plan: "pro", nested: { camelCaseKey: 1 } });
assert.ok(created.id.startsWith("user_"));
assert.ok(created.createdAt > 0);
step("createUser", { id: created.id });

const got = await clerk.users.getUser(created.id);
assert.equal(got.id, created.id);
assert.equal(got.emailAddresses.length, 1);
assert.deepEqual(got.privateMetadata, { internal: true });
step("getUser");

const second = await clerk.users.createUser({ emailAddress: [`sdk2-${tag}@example.com`] });
const list = await clerk.users.getUserList({ limit: 1, orderBy: "-created_at", query: tag });
assert.equal(list.totalCount, 2);
assert.equal(list.data.length, 1);
assert.equal(list.data[0].id, second.id);
const byEmail = await clerk.users.getUserList({ emailAddress: [`sdk-${tag}@example.com`, `sdk2-${tag}@example.com`] });
assert.equal(byEmail.totalCount, 2);
assert.equal(byEmail.data.length, 2);
const count = await clerk.users.getCount({ query: tag });
assert.equal(count, 2);
step("getUserList", { totalCount: list.totalCount });

const updated = await clerk.users.updateUser(created.id, { firstName: "Amazing", lastName: "Grace" });
assert.equal(updated.firstName, "Amazing");
assert.equal(updated.lastName, "Grace");
const merged = await clerk.users.updateUserMetadata(created.id, { publicMetadata: { seats: 5, plan: null } });
assert.deepEqual(merged.publicMetadata, { nested: { camelCaseKey: 1 }, seats: 5 });
const replaced = await clerk.users.updateUser(created.id, { publicMetadata: { only: "this" } });
assert.deepEqual(replaced.publicMetadata, { only: "this" });
step("updateUser");

const banned = await clerk.users.banUser(created.id);
assert.equal(banned.banned, true);
const unbanned = await clerk.users.unbanUser(created.id);
assert.equal(unbanned.banned, false);
step("banUser");

// Errors come back as the SDK's ClerkAPIResponseError with our trace id.
try {
  await clerk.users.createUser({ emailAddress: [`sdk-${tag}@example.com`] });
  assert.fail("duplicate email must be refused");
} catch (err) {
  assert.equal(err.status, 409);
  assert.equal(err.errors[0].code, "form_identifier_exists");
  assert.ok(err.clerkTraceId && err.clerkTraceId.length > 0);
}
step("duplicateRefused");

const deleted = await clerk.users.deleteUser(created.id);
assert.equal(deleted.id, created.id);
assert.equal(deleted.deleted, true);
try {
  await clerk.users.getUser(created.id);
  assert.fail("deleted user must be gone");
} catch (err) {
  assert.equal(err.status, 404);
}
await clerk.users.deleteUser(second.id);
step("deleteUser");

// A bad key is a 401 the SDK surfaces as an error.
const bad = createClerkClient({ secretKey: "sk_test_invalid", apiUrl });
try {
  await bad.users.getUserList();
  assert.fail("invalid key must be refused");
} catch (err) {
  assert.equal(err.status, 401);
}
step("badKeyRefused");
console.log(JSON.stringify({ ok: true }));
