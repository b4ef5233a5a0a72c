import type { Services } from '../services/container';
import type { Viewer } from '../services/viewer';

/** Per request (HTTP) or per connection (WebSocket). */
export interface Context {
  viewer: Viewer;
  services: Services;
}
