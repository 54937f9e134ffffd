// Test-only stand-in for a Kubernetes cluster's service-account token issuer, for the hub's auth tests.
// NEVER run it anywhere but a test: it mints a token for whatever POST /test/token asks.
//
//   node scripts/oidc-provider/kubernetes-issuer.mjs
//
// What it copies from kube-apiserver: a discovery document WITHOUT `authorization_endpoint` (the
// field OpenID Connect Discovery requires and Kubernetes omits), keys at /openid/v1/jwks served as
// application/jwk-set+json, discovery and keys answered only with a bearer token (as a cluster where
// the issuer-discovery role is granted to service accounts only), and tokens shaped like projected
// service-account tokens: header {alg: RS256, kid} with no `typ`, claims iss, sub
// (system:serviceaccount:NS:NAME), aud, exp, iat, nbf, jti and the `kubernetes.io` object.
//
// Environment:
//   K8S_PORT=0                      port on 127.0.0.1 (0: a free one)
//   K8S_TLS_CERT, K8S_TLS_KEY       PEM files: serve HTTPS (the issuer is then https://127.0.0.1:PORT)
//   K8S_DISCOVERY_TOKEN             when set, discovery and JWKS need `Authorization: Bearer` with it
// Prints `kubernetes-issuer listening at ISSUER` on stdout once it serves.
//
// POST /test/token {namespace, serviceaccount, audience, expires_in?} -> {token}
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { SignJWT } from 'jose';

const env = process.env;
const tls = env.K8S_TLS_CERT && env.K8S_TLS_KEY;
const kid = `sa-${randomUUID().slice(0, 8)}`;
const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const publicJwk = { ...publicKey.export({ format: 'jwk' }), kid, use: 'sig', alg: 'RS256' };
const discoveryToken = env.K8S_DISCOVERY_TOKEN;

const server = tls
  ? https.createServer({ cert: readFileSync(env.K8S_TLS_CERT), key: readFileSync(env.K8S_TLS_KEY) })
  : http.createServer();

server.listen(Number(env.K8S_PORT || 0), '127.0.0.1', () => {
  const issuer = `${tls ? 'https' : 'http'}://127.0.0.1:${server.address().port}`;
  server.on('request', (req, res) => handle(issuer, req, res).catch((e) => send(res, 500, { error: String(e) })));
  console.log(`kubernetes-issuer listening at ${issuer} (kid ${kid})`);
});

function send(res, status, body, type = 'application/json') {
  res.writeHead(status, { 'content-type': type });
  res.end(JSON.stringify(body));
}

async function handle(issuer, req, res) {
  const url = new URL(req.url, issuer);
  const authorized = !discoveryToken || req.headers.authorization === `Bearer ${discoveryToken}`;
  if (req.method === 'GET' && url.pathname === '/.well-known/openid-configuration') {
    if (!authorized) return send(res, 401, { kind: 'Status', message: 'Unauthorized' });
    return send(res, 200, {
      issuer,
      jwks_uri: `${issuer}/openid/v1/jwks`,
      response_types_supported: ['id_token'],
      subject_types_supported: ['public'],
      id_token_signing_alg_values_supported: ['RS256'],
    });
  }
  if (req.method === 'GET' && url.pathname === '/openid/v1/jwks') {
    if (!authorized) return send(res, 401, { kind: 'Status', message: 'Unauthorized' });
    return send(res, 200, { keys: [publicJwk] }, 'application/jwk-set+json');
  }
  if (req.method === 'POST' && url.pathname === '/test/token') {
    let body = '';
    for await (const c of req) body += c;
    const { namespace, serviceaccount, audience, expires_in: ttl = 3600 } = JSON.parse(body);
    const now = Math.floor(Date.now() / 1000);
    const token = await new SignJWT({
      aud: [audience],
      'kubernetes.io': {
        namespace,
        pod: { name: `${serviceaccount}-pod`, uid: randomUUID() },
        serviceaccount: { name: serviceaccount, uid: randomUUID() },
      },
    })
      .setProtectedHeader({ alg: 'RS256', kid })
      .setIssuer(issuer)
      .setSubject(`system:serviceaccount:${namespace}:${serviceaccount}`)
      .setIssuedAt(now)
      .setNotBefore(now)
      .setExpirationTime(now + ttl)
      .setJti(randomUUID())
      .sign(privateKey);
    return send(res, 200, { token });
  }
  return send(res, 404, { error: 'not found' });
}
