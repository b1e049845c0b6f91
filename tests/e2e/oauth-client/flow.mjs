// A standard OAuth 2.1 / OpenID Connect client library (openid-client, by
// the author of the OpenID Certified oidc-provider), unmodified, against a
// running Gatehouse: RFC 8414 discovery and RFC 7591 registration, an
// authorization request with PKCE, the user's sign-up and consent as the
// browser would post them, then the code exchange (which checks the RFC 9207
// `iss` parameter and the ID token), userinfo, refresh and revocation.
// OIDC discovery of the same issuer must agree. Prints {"ok":true} at the end.
import * as client from 'openid-client';

const issuer = new URL(process.env.GATEHOUSE_ISSUER);
const redirectUri = 'http://127.0.0.1:53682/callback';
const insecure = { execute: [client.allowInsecureRequests] };

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

// Discovery through the RFC 8414 path an MCP client derives, then registration.
const config = await client.dynamicClientRegistration(
  issuer,
  {
    client_name: 'openid-client e2e',
    redirect_uris: [redirectUri],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'none',
    scope: 'openid email offline_access',
  },
  client.None(),
  { ...insecure, algorithm: 'oauth2' },
);
const server = config.serverMetadata();
check(server.issuer === issuer.href, `issuer ${server.issuer}`);
check(server.code_challenge_methods_supported.includes('S256'), 'S256 advertised');
const clientId = config.clientMetadata().client_id;
check(typeof clientId === 'string' && clientId.length > 0, 'registered client_id');

// OpenID discovery of the same issuer finds the same server.
const oidc = await client.discovery(issuer, clientId, undefined, client.None(), insecure);
check(oidc.serverMetadata().token_endpoint === server.token_endpoint, 'same token endpoint');

// The authorization request.
const verifier = client.randomPKCECodeVerifier();
const state = client.randomState();
const nonce = client.randomNonce();
const authUrl = client.buildAuthorizationUrl(config, {
  redirect_uri: redirectUri,
  scope: 'openid email offline_access',
  code_challenge: await client.calculatePKCECodeChallenge(verifier),
  code_challenge_method: 'S256',
  state,
  nonce,
});

// The user's part, posted as a browser would: sign up, then allow.
const jar = new Map();
async function visit(url, form) {
  const res = await fetch(url, {
    method: form ? 'POST' : 'GET',
    redirect: 'manual',
    headers: {
      cookie: [...jar].map(([k, v]) => `${k}=${v}`).join('; '),
      ...(form ? { 'content-type': 'application/x-www-form-urlencoded' } : {}),
    },
    body: form ? new URLSearchParams(form) : undefined,
  });
  for (const c of res.headers.getSetCookie()) {
    const [pair] = c.split(';');
    const i = pair.indexOf('=');
    jar.set(pair.slice(0, i), pair.slice(i + 1));
  }
  const location = res.headers.get('location');
  return { status: res.status, location: location && new URL(location, url), html: await res.text() };
}
const unescape = (s) =>
  s.replace(/&#x2f;/g, '/').replace(/&#x3a;/g, ':').replace(/&#39;/g, "'")
    .replace(/&quot;/g, '"').replace(/&lt;/g, '<').replace(/&gt;/g, '>')
    .replace(/&#38;/g, '&').replace(/&amp;/g, '&');
function hiddenFields(html) {
  const out = {};
  for (const m of html.matchAll(/<input type="hidden" name="([^"]+)" value="([^"]*)">/g)) {
    out[m[1]] = unescape(m[2]);
  }
  return out;
}

let r = await visit(authUrl);
check(r.status === 302 && r.location.pathname.endsWith('/sign-in'), `to sign-in: ${r.status}`);
const back = r.location.searchParams.get('redirect_url');
const signUpUrl = new URL(r.location.pathname.replace(/sign-in$/, 'sign-up'), issuer);
r = await visit(signUpUrl);
const signUp = hiddenFields(r.html);
r = await visit(signUpUrl, {
  ...signUp,
  redirect_url: back,
  email: `oidc-client-${Date.now()}@example.com`,
  password: 'correct horse battery',
});
check(r.status === 303, `sign-up: ${r.status}`);
r = await visit(r.location);
check(r.status === 200 && r.html.includes('openid-client e2e'), `consent screen: ${r.status}`);
r = await visit(new URL('oauth/authorize', `${issuer.href}/`), {
  ...hiddenFields(r.html),
  decision: 'accept',
});
check(r.status === 303 && r.location.href.startsWith(redirectUri), `back to the client: ${r.status}`);

// The code exchange: state, iss (RFC 9207), PKCE and the ID token checked by the library.
const tokens = await client.authorizationCodeGrant(config, r.location, {
  pkceCodeVerifier: verifier,
  expectedState: state,
  expectedNonce: nonce,
  idTokenExpected: true,
});
check(tokens.token_type.toLowerCase() === 'bearer', 'bearer token');
const claims = tokens.claims();
check(claims.iss === issuer.href && claims.aud === clientId, 'ID token issuer and audience');

const info = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
check(info.sub === claims.sub, 'userinfo subject');

const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token);
check(refreshed.refresh_token && refreshed.refresh_token !== tokens.refresh_token, 'rotated refresh token');

await client.tokenRevocation(config, refreshed.refresh_token);
let refused = false;
try {
  await client.refreshTokenGrant(config, refreshed.refresh_token);
} catch (e) {
  refused = e.code === 'OAUTH_RESPONSE_BODY_ERROR' && e.error === 'invalid_grant';
}
check(refused, 'a revoked refresh token is refused with invalid_grant');

console.log(JSON.stringify({ ok: true }));
