// AetherFS's test-only OpenID provider (panva's oidc-provider 9, certified), used by the hub's and the
// client's auth tests. NEVER run it anywhere but a test: it signs whatever /test/sign is sent.
//
//   node scripts/oidc-provider/server.mjs          (installed by scripts/install-test-peers.sh)
//
// Environment:
//   OIDC_PORT=0              port on 127.0.0.1 (0: a free one); the issuer is http://127.0.0.1:PORT
//   OIDC_AUDIENCE=urn:aetherfs  the resource server (audience) of the access tokens
//   OIDC_ACCESS_TTL=3600     access tokens of the device flow and refreshes (e.g. 5 to exercise refresh)
//   OIDC_CC_TTL=3600         client_credentials access tokens
//   OIDC_TEST_USER=alice     the user who "logs in" during the device flow
//   OIDC_USER_GROUPS=team-a  that user's `groups` claim (comma-separated)
//   OIDC_WEB_USERS=alice:alice-pw  who may sign in on the HTML login page (`user:password[:group+group]`,
//                            comma-separated; without groups a user gets OIDC_USER_GROUPS)
//
// Prints one line `oidc-provider listening at ISSUER` on stdout once it serves. Every start makes a new
// RSA signing key with a new `kid`: restarting it on the same port is a key rotation.
//
// Clients (confidential ones authenticate with client_secret_basic, secret = `${id}-secret`):
//   reader, writer-a, writer-b, admin, daemon-client: client_credentials; the token's `sub` is the client
//     id and `groups` comes from GROUPS below.
//   cli-client: public; device_code + refresh_token (a refresh token needs the `offline_access` scope;
//     with `openid` the token response also carries an ID token, audience `cli-client`).
//   web-client: public (PKCE), authorization_code for the hub's web page; a native client, so its
//     redirect URI http://127.0.0.1/web/callback matches on any port (RFC 8252 §7.3), as the hub's
//     ephemeral test ports need. Its logins go through a real HTML form (GET /interaction/:uid shows it,
//     POST /interaction/:uid/login checks OIDC_WEB_USERS); ID tokens carry `groups`.
// Resources: OIDC_AUDIENCE (the default) and `urn:other` (a real token for the wrong audience).
//
// Test-only routes:
//   POST /test/sign {payload, header?, key?}  signs `payload` as a JWT. key: "current" (the provider's
//     signing key, RS256, its kid unless header.kid says otherwise), "other" (a key that is not in the
//     JWKS, RS256, the current kid by default), "hmac-public" (HS256 whose secret is the PEM text of the
//     provider's public key: the classic key-confusion attack). Answers {token}.
//   GET /interaction/:uid  completes login and consent for OIDC_TEST_USER at once (no HTML forms), so a
//     device-flow login is approved by visiting the verification URI (approve.py does, as a browser);
//     for web-client it shows the login form instead (consent is still granted at once).
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import http from 'node:http';
import { SignJWT, importJWK } from 'jose';
import Provider from 'oidc-provider';

const env = process.env;
const audience = env.OIDC_AUDIENCE || 'urn:aetherfs';
const otherAudience = 'urn:other';
const accessTTL = Number(env.OIDC_ACCESS_TTL || 3600);
const ccTTL = Number(env.OIDC_CC_TTL || 3600);
const testUser = env.OIDC_TEST_USER || 'alice';
const userGroups = (env.OIDC_USER_GROUPS ?? 'team-a').split(',').filter(Boolean);
const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';
const WEB_CLIENT = 'web-client';
// user -> { password, groups }
const webUsers = new Map((env.OIDC_WEB_USERS ?? 'alice:alice-pw').split(',').filter(Boolean).map((u) => {
  const [name, password, groups] = u.split(':');
  return [name, { password, groups: groups ? groups.split('+').filter(Boolean) : userGroups }];
}));
const groupsOf = (sub) => webUsers.get(sub)?.groups ?? userGroups;

// The `groups` claim of each client_credentials client.
const GROUPS = {
  reader: ['readers'],
  'writer-a': ['team-a'],
  'writer-b': ['team-b'],
  admin: ['admins'],
  'daemon-client': ['daemons'],
};

const kid = `key-${randomUUID().slice(0, 8)}`;
const keyPair = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...keyPair.privateKey.export({ format: 'jwk' }), kid, use: 'sig', alg: 'RS256' };
const publicPem = keyPair.publicKey.export({ type: 'spki', format: 'pem' });
const otherKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;

const server = http.createServer();
server.listen(Number(env.OIDC_PORT || 0), '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = makeProvider(issuer);
  const callback = provider.callback();
  server.on('request', (req, res) => {
    if (req.method === 'POST' && req.url === '/test/sign') return sign(req, res);
    return callback(req, res);
  });
  console.log(`oidc-provider listening at ${issuer} (kid ${kid})`);
});

function makeProvider(issuer) {
  const confidential = Object.keys(GROUPS).map((id) => ({
    client_id: id, client_secret: `${id}-secret`,
    grant_types: ['client_credentials'], response_types: [], redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_basic', scope: 'datasets:read',
  }));
  const provider = new Provider(issuer, {
    jwks: { keys: [jwk] },
    clients: [...confidential, {
      client_id: 'cli-client', // public: no secret
      token_endpoint_auth_method: 'none',
      grant_types: [DEVICE_GRANT, 'refresh_token'], response_types: [], redirect_uris: [],
      scope: 'openid offline_access datasets:read',
    }, {
      client_id: WEB_CLIENT, // public: PKCE, no secret
      application_type: 'native',
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code'], response_types: ['code'],
      redirect_uris: ['http://127.0.0.1/web/callback'],
      scope: 'openid datasets:read',
    }],
    // `groups` rides in the ID token too, so the hub can take a web sign-in's groups from it.
    conformIdTokenClaims: false,
    claims: { openid: ['sub', 'groups'] },
    scopes: ['openid', 'offline_access', 'datasets:read'],
    findAccount: (ctx, sub) => ({ accountId: sub, claims: () => ({ sub, groups: groupsOf(sub) }) }), // any account exists
    cookies: { keys: ['test-cookie-key'] },
    extraTokenClaims: (ctx, token) => ({
      groups: token.accountId ? groupsOf(token.accountId) : (GROUPS[token.clientId] || []),
    }),
    ttl: {
      AccessToken: accessTTL, ClientCredentials: ccTTL, DeviceCode: 600, RefreshToken: 86400,
      Grant: 86400, Session: 86400, Interaction: 600, IdToken: 3600,
    },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    features: {
      devInteractions: { enabled: false },
      deviceFlow: { enabled: true },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => audience, // when a request names no `resource`
        useGrantedResource: () => true, // device_code and refresh_token ATs go to the granted resource
        getResourceServerInfo: (ctx, resource) => {
          if (resource !== audience && resource !== otherAudience) throw new Error(`unknown resource ${resource}`);
          return { scope: 'datasets:read', audience: resource, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } } };
        },
      },
    },
  });

  // The web client's login form: a real page with user name and password.
  provider.use(async (ctx, next) => {
    const m = /^\/interaction\/([^/]+)\/login$/.exec(ctx.path);
    if (ctx.method !== 'POST' || !m) return next();
    const form = new URLSearchParams(await readBody(ctx.req));
    const user = webUsers.get(form.get('username') || '');
    if (!user || user.password !== form.get('password')) {
      ctx.status = 401;
      ctx.type = 'html';
      ctx.body = loginPage(m[1], 'Wrong user name or password.');
      return undefined;
    }
    ctx.redirect(await provider.interactionResult(ctx.req, ctx.res,
      { login: { accountId: form.get('username') } }, { mergeWithLastSubmission: false }));
    return undefined;
  });

  // The test "user": completes login and consent of any interaction at once.
  provider.use(async (ctx, next) => {
    if (ctx.method !== 'GET' || !/^\/interaction\/[^/]+$/.test(ctx.path)) return next();
    const { uid, prompt, params, session, grantId } = await provider.interactionDetails(ctx.req, ctx.res);
    let result;
    if (prompt.name === 'login' && params.client_id === WEB_CLIENT) {
      ctx.type = 'html';
      ctx.body = loginPage(uid);
      return undefined;
    }
    if (prompt.name === 'login') {
      result = { login: { accountId: testUser } };
    } else { // consent: grant everything that is missing
      const d = prompt.details;
      const grant = grantId ? await provider.Grant.find(grantId)
        : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
      if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
      if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
      for (const [ind, sc] of Object.entries(d.missingResourceScopes || {})) grant.addResourceScope(ind, sc.join(' '));
      result = { consent: { grantId: await grant.save() } };
    }
    ctx.redirect(await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: true }));
  });
  return provider;
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    let body = '';
    req.on('data', (c) => { body += c; if (body.length > 16384) reject(new Error('body too large')); });
    req.on('end', () => resolve(body));
    req.on('error', reject);
  });
}

const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function loginPage(uid, error) {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Test provider: sign in</title></head>
<body><main><h1>Test OpenID provider</h1>${error ? `<p role="alert">${escapeHtml(error)}</p>` : ''}
<form method="post" action="/interaction/${escapeHtml(uid)}/login">
<p><label for="username">Username</label> <input id="username" name="username" autocomplete="username"></p>
<p><label for="password">Password</label> <input id="password" name="password" type="password"></p>
<p><button type="submit">Sign in</button></p></form></main></body></html>`;
}

// POST /test/sign: see the header comment.
function sign(req, res) {
  let body = '';
  req.on('data', (c) => { body += c; });
  req.on('end', async () => {
    try {
      const { payload, header = {}, key = 'current' } = JSON.parse(body);
      let signingKey;
      let alg = 'RS256';
      if (key === 'current') signingKey = await importJWK(jwk, 'RS256');
      else if (key === 'other') signingKey = otherKey;
      else if (key === 'hmac-public') { signingKey = new TextEncoder().encode(publicPem); alg = 'HS256'; }
      else throw new Error(`unknown key ${key}`);
      const token = await new SignJWT(payload).setProtectedHeader({ alg, kid, typ: 'at+jwt', ...header }).sign(signingKey);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ token }));
    } catch (e) {
      res.writeHead(400, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: String(e) }));
    }
  });
}
