// Words shown to the user for a peer's state and a message's state (issue 11). One mapping, used by
// the DM button (content script), the worker's lookup and the widget, so they cannot disagree.

/**
 * Resolver failures the bridge reports as -32004 with data.reason (bridge/api/rpc.py): the name was
 * not found, the name service could not be asked, … Each is "could not resolve": Parley does not know
 * a wallet for the name, so it cannot say whether that wallet is on Parley. Only a name that resolved
 * to a wallet with no Parley installation is "not on Parley yet".
 */
export const RESOLVE_ERROR = -32004;

/**
 * A failed `resolve` (or, with reason 'relay' set by the caller, `canMessage`) as the peer state
 * {state: 'unresolved', reason, detail}.
 */
export function unresolvedFrom(error) {
  const data = error && typeof error.data === 'object' && error.data ? error.data : {};
  const reason = typeof data.reason === 'string' && data.reason ? data.reason : 'error';
  const detail = typeof data.detail === 'string' && data.detail ? data.detail : String(error?.message ?? 'error');
  return { state: 'unresolved', reason: reason.slice(0, 40), detail: detail.slice(0, 200) };
}

const UNAVAILABLE = {
  'not-paired': ['Pair Parley', 'Pair this browser with your Parley bridge (open the Parley popup).'],
  unreachable: ['Parley bridge not running', 'This browser is paired, but the Parley bridge is not running or not reachable: start `parley run`.'],
  'not-verified': ['Parley bridge not verified', 'Something on the Parley bridge’s port could not prove it is your bridge: is `parley run` running?'],
  'not-on-parley': ['Not on Parley yet', 'This account has no Parley installation yet. Click to copy an invite.'],
};

/**
 * The label and explanation for a peer state: ready ("Message"), loading, unavailable (reason:
 * not-on-parley | not-paired | unreachable | not-verified) or unresolved (any reason; `detail` is the
 * bridge's short explanation). Returns {text, title}.
 */
export function peerLabel(state, reason, detail) {
  if (state === 'ready') return { text: 'Message', title: 'Send a private message with Parley' };
  if (state === 'loading') return { text: 'Message', title: 'Checking Parley…' };
  if (state === 'unresolved' && reason === 'relay') {
    const why = detail ? `: ${String(detail).slice(0, 200)}` : '';
    return { text: 'Couldn’t check Parley', title: `Parley couldn’t ask the relays whether this account is on Parley${why}` };
  }
  if (state === 'unresolved') {
    const why = detail ? `: ${String(detail).slice(0, 200)}` : '';
    return { text: 'Couldn’t resolve', title: `Parley couldn’t resolve this account${why}` };
  }
  const [text, title] = UNAVAILABLE[reason] ?? UNAVAILABLE['not-on-parley'];
  return { text, title };
}

/** Message states: a message the bridge has finished with (sent, failed) is never shown as pending again. */
const PENDING = new Set(['sending', 'queued']);
const FINAL = new Set(['sent', 'failed', 'read']);

const MESSAGE_LABELS = {
  sending: ['Sending…', 'Your bridge is sending this message.'],
  queued: ['Queued — will retry', 'Not delivered yet: your bridge keeps it and retries until a relay takes it.'],
  sent: ['Sent', 'Delivered to the relay that holds their inbox.'],
  failed: ['Failed — not sent', 'Your bridge gave up on this message: none of their devices could be reached.'],
  read: ['Read', 'Their read receipt arrived: they have read it.'],
};

/** The state of a message from the bridge (queued | sent | failed | read); anything else is "sent". */
export function messageState(message) {
  const state = message?.state;
  return state === 'queued' || state === 'failed' || state === 'read' ? state : 'sent';
}

/**
 * True when a message shown as `current` may be shown as `next`: a late answer saying "queued" must
 * not undo the "sent" an update already brought, and "sending" only ever comes first.
 */
export function stateAdvances(current, next) {
  if (!PENDING.has(next) && !FINAL.has(next)) return false;
  if (next === 'sending') return current === undefined || current === 'sending';
  if (current === 'read') return next === 'read'; // the peer's receipt is the last word (issue 12)
  return !(FINAL.has(current) && PENDING.has(next));
}

/** {text, title} for an outgoing message's state. */
export function messageLabel(state) {
  const [text, title] = MESSAGE_LABELS[state] ?? MESSAGE_LABELS.sent;
  return { text, title };
}

