// An independent OpenID provider (oidc-provider) for the gateway's token tests.
//
//   node server.js --port 0 [--issuer URL] [--resource PREFIX] --jwks FILE
//                  [--tls-cert PEM --tls-key PEM]
//
// Loopback only. Prints "ready at <issuer>" once listening. The signing keys
// (private JWKS) come from a file, so a restart with other keys rotates them.
// Clients (all client_secret_basic, secret "<id>-secret"):
//   backend     client_credentials, JWT access tokens (RFC 9068) for the resource
//   opaque-app  client_credentials, opaque access tokens (RFC 7662 introspection)
//   gateway     the resource server: calls the introspection endpoint
// A token request may carry `patient` and `fhirUser` (SMART launch context) in
// its form body; they become claims of the token (introspection shows them too). GET /_stats counts requests by path.
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: process.env.OIDC_PORT ?? '0' },
    issuer: { type: 'string', default: process.env.OIDC_ISSUER },
    resource: { type: 'string', default: process.env.OIDC_RESOURCE ?? 'http://127.0.0.1:' },
    jwks: { type: 'string', default: process.env.OIDC_JWKS },
    'tls-cert': { type: 'string', default: process.env.OIDC_TLS_CERT },
    'tls-key': { type: 'string', default: process.env.OIDC_TLS_KEY },
    'token-ttl': { type: 'string', default: process.env.OIDC_TOKEN_TTL ?? '600' },
  },
});

const tls = args['tls-cert']
  ? { cert: readFileSync(args['tls-cert']), key: readFileSync(args['tls-key']) }
  : null;
const jwks = JSON.parse(readFileSync(args.jwks, 'utf8'));
const ttl = Number(args['token-ttl']);
const counts = {};

function client(id, format) {
  return {
    client_id: id,
    client_secret: `${id}-secret`,
    grant_types: format ? ['client_credentials'] : [],
    redirect_uris: [],
    response_types: [],
    token_endpoint_auth_method: 'client_secret_basic',
    'urn:test:format': format,
  };
}

function configuration() {
  return {
    clients: [client('backend', 'jwt'), client('opaque-app', 'opaque'), client('gateway', null)],
    jwks,
    extraClientMetadata: { properties: ['urn:test:format'] },
    cookies: { keys: ['test-only-cookie-key'] },
    ttl: { ClientCredentials: ttl, AccessToken: ttl },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: {
        enabled: true,
        // The resource server may introspect any token; nobody else may.
        allowedPolicy: async (ctx, caller) => caller.clientId === 'gateway',
      },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (ctx, caller, oneOf) => oneOf,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (ctx, indicator, caller) => {
          if (!indicator.startsWith(args.resource)) {
            throw new Provider.errors.InvalidTarget('unknown resource server');
          }
          const format = caller['urn:test:format'] ?? 'jwt';
          return {
            scope: String(ctx.oidc.params.scope ?? ''),
            audience: indicator,
            accessTokenTTL: ttl,
            accessTokenFormat: format,
          };
        },
      },
    },
    extraTokenClaims: async (ctx) => {
      const claims = {};
      for (const name of ['patient', 'fhirUser']) {
        const value = ctx?.oidc?.body?.[name];
        if (value) claims[name] = String(value);
      }
      return claims;
    },
  };
}

const server = tls ? https.createServer(tls) : http.createServer();
server.listen(Number(args.port), '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = args.issuer ?? `${tls ? 'https' : 'http'}://127.0.0.1:${port}`;
  const provider = new Provider(issuer, configuration());
  provider.use(async (ctx, next) => {
    counts[ctx.path] = (counts[ctx.path] ?? 0) + 1;
    await next();
  });
  const callback = provider.callback();
  server.on('request', (req, res) => {
    if (req.url === '/_stats') {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(counts));
      return;
    }
    callback(req, res);
  });
  console.log(`ready at ${issuer}`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
