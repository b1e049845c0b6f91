// oidc-provider as shipped (in-memory adapter, its default opaque access
// tokens), with client_credentials and introspection enabled and one
// confidential client, for `gatehouse bench oauth` to drive side by side
// with Gatehouse. Usage: PORT=3000 node server.mjs
import Provider from 'oidc-provider';

const port = Number(process.env.PORT || 3000);
const provider = new Provider(`http://127.0.0.1:${port}`, {
  clients: [
    {
      client_id: 'bench',
      client_secret: 'bench-secret-0123456789abcdefghijklmnop',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  features: {
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    devInteractions: { enabled: false },
  },
});
provider.listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on http://127.0.0.1:${port}`);
});
