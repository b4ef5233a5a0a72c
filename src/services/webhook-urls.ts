import dns from 'node:dns';
import net from 'node:net';
import ipaddr from 'ipaddr.js';
import { badInput } from './errors';

/**
 * Webhook URLs and server-side request forgery: a URL a user gives must not make the platform call
 * into its own network (the database, a cloud metadata service, an admin port on loopback). An
 * address passes only if ipaddr.js ranges it as public unicast; loopback, private, link-local,
 * carrier-grade NAT, multicast and the other reserved ranges (IPv4-mapped IPv6 by their IPv4) do not,
 * unless the deployment allows private networks (tests, closed installs).
 */

const MAX_URL_LENGTH = 2000;

export function isPublicAddress(address: string): boolean {
  return ipaddr.process(address).range() === 'unicast';
}

/**
 * Checks a webhook URL when it is given: http(s), no credentials, and a host that resolves, to public
 * addresses only. The check is repeated on every connection (`publicOnlyLookup`), since a name may
 * resolve elsewhere later.
 */
export async function checkWebhookUrl(raw: string, allowPrivateNetworks: boolean, field: string): Promise<string> {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw badInput(`${field}: not a URL`);
  }
  if (raw.length > MAX_URL_LENGTH) throw badInput(`${field}: must be at most ${MAX_URL_LENGTH} characters`);
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw badInput(`${field}: must be an http or https URL`);
  if (url.username || url.password) throw badInput(`${field}: must not carry credentials`);
  if (allowPrivateNetworks) return url.href;
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  const addresses = net.isIP(host)
    ? [host]
    : await dns.promises.lookup(host, { all: true }).then(
        (found) => found.map((entry) => entry.address),
        () => {
          throw badInput(`${field}: the host does not resolve`);
        },
      );
  if (!addresses.every(isPublicAddress)) throw badInput(`${field}: must not point at a loopback, private or reserved address`);
  return url.href;
}

class PrivateAddressError extends Error {
  override readonly name = 'PrivateAddressError';
}

/**
 * A `lookup` for node:http(s) that resolves as usual and refuses a name with any non-public address,
 * so the address connected to is the one checked (a name cannot pass the check and then rebind).
 */
export const publicOnlyLookup: net.LookupFunction = (hostname, options, callback) => {
  dns.lookup(hostname, { ...options, all: true }, (error, addresses) => {
    if (error) return callback(error, '', 0);
    const found = addresses as dns.LookupAddress[];
    const refused = found.find((entry) => !isPublicAddress(entry.address));
    if (refused) return callback(new PrivateAddressError(`${hostname} resolves to a non-public address`), '', 0);
    if (options.all) return (callback as unknown as (e: null, a: dns.LookupAddress[]) => void)(null, found);
    callback(null, found[0].address, found[0].family);
  });
};
