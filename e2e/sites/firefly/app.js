// Firefly (firefly.social) replica for e2e tests, modelled on Firefly's public code:
// /profile/<lens|farcaster|wallet|x>/<id>[/<tab>], lens ids as "alice" or "lens%2Falice", farcaster
// ids as fid or fname. The display name is in <address>; its sibling <div> holds Follow and a
// more-actions menu, followed by @handle. The header renders late.
// Shapes (?shape=, see spa.js): "direct" (the original replica), "wrapped" (Firefly's public source,
// see header()), "unknown" (no follow-like or menu button the extension knows: the floating button).
import { SHAPE, h, loadFixtures, renderDelay, sleep, startRouter, userByAddress, userByFid, userByName } from '/_shared/spa.js';

const root = document.getElementById('root');

function nav(fx) {
  const a = fx.users.alice;
  const links = [['/', 'Home'], ['/discover', 'Discover'], ['/post/lens/0x01', 'A post'],
    ['/profile/lens/alice', 'alice (lens)'], ['/profile/lens/lens%2Fbob', 'bob (lens/bob)'],
    [`/profile/farcaster/${fx.users.carol.fid}`, 'carol (fid)'], ['/profile/farcaster/bob', 'bob (fname)'],
    [`/profile/wallet/${a.address}`, 'alice (wallet)'], ['/profile/x/elonmusk', 'x profile'],
    ['/profile/lens/alice/replies', 'alice replies']];
  document.getElementById('nav').replaceChildren(...links.map(([href, text]) => h('a', { href, 'data-link': true, text })));
}

function rerender(fx, name, handle) {
  return h('button', { 'data-replica': 'rerender', text: 'Re-render header', onclick: () => { root.querySelector('[data-replica="profile-header"]').replaceWith(header(fx, name, handle)); } });
}

function header(fx, name, handle) {
  if (SHAPE === 'wrapped') {
    // Profile/Info.tsx (DimensionDev/firefly.mask.social @ 4dd59aacf6ce7b550b878b4b113243d719292bdf,
    // January 2025): div.flex.w-full.items-center.gap-2 > [source icon, <address> (in a tooltip),
    // verify badge, div.ml-auto.flex.items-center.gap-2 > ProfileAction = [FollowButton, ProfileMoreAction]];
    // ProfileMoreAction is MoreActionMenu: <Menu as="div" className="relative"> with
    // MenuButton aria-label="More". The text variant of FollowButton ("Follow") is used here.
    return h('div', { class: 'grid', 'data-replica': 'profile-header' },
      h('img', { src: '/avatar.svg', alt: 'avatar' }),
      h('div', { class: 'relative flex w-full flex-col' },
        h('div', { class: 'flex w-full flex-col' },
          h('div', { class: 'flex w-full items-center gap-2' },
            h('span', { class: 'source-icon', text: '◆' }),
            h('address', { class: 'truncate', 'data-overflow': 'false', text: name }),
            h('span', { class: 'badge' }),
            h('div', { class: 'ml-auto flex items-center gap-2' },
              h('button', { type: 'button', class: 'flex h-8 items-center', text: 'Follow' }),
              h('div', { class: 'relative' }, h('button', { type: 'button', 'aria-label': 'More', 'aria-haspopup': 'menu', 'aria-expanded': 'false', text: '⋯' })))),
          h('span', { text: `@${handle}` }))),
      rerender(fx, name, handle));
  }
  if (SHAPE === 'unknown') {
    return h('div', { class: 'head', 'data-replica': 'profile-header' },
      h('img', { src: '/avatar.svg', alt: name }), h('h2', { text: name }),
      h('div', {}, h('button', { text: 'Subscribe' }), h('button', { 'aria-label': 'Actions', text: '⋯' })),
      h('span', { text: `@${handle}` }), rerender(fx, name, handle));
  }
  return h('div', { class: 'head', 'data-replica': 'profile-header' },
    h('img', { src: '/avatar.svg', alt: name }),
    h('address', { text: name }),
    h('div', {}, h('button', { text: 'Follow' }), h('button', { 'aria-label': 'More actions', 'aria-haspopup': 'menu', text: '⋯' })),
    h('span', { text: `@${handle}` }),
    rerender(fx, name, handle));
}

function findUser(fx, platform, rawId) {
  const id = decodeURIComponent(rawId ?? '');
  if (platform === 'lens') return userByName(fx, id.startsWith('lens/') ? id.slice(5) : id);
  if (platform === 'farcaster') return /^\d+$/.test(id) ? userByFid(fx, id) : userByName(fx, id);
  if (platform === 'wallet') return userByAddress(fx, id);
  if (platform === 'x') return { handle: id, name: `${id} on X` };
  return null;
}

async function render(path, isCurrent) {
  const fx = await loadFixtures();
  nav(fx);
  const parts = path.split('/');
  if (parts[1] === 'profile') {
    root.replaceChildren(h('p', { text: 'Loading…' }));
    await sleep(renderDelay());
    if (!isCurrent()) return;
    const user = findUser(fx, parts[2], parts[3]);
    document.title = user ? `${user.name} (@${user.handle}) | Firefly` : 'Firefly';
    root.replaceChildren(user ? header(fx, user.name, user.handle) : h('h1', { text: 'Not found' }));
    return;
  }
  document.title = 'Firefly';
  root.replaceChildren(h('h1', { text: parts[1] === 'post' ? 'Post' : 'Feed' }),
    ...Object.entries(fx.users).map(([handle, u]) => h('div', { class: 'head' },
      h('address', { text: u.name }), h('div', {}, h('button', { text: 'Follow' }), h('button', { 'aria-label': 'More actions', text: '⋯' })),
      h('a', { href: `/profile/lens/${handle}`, 'data-link': true, text: `@${handle}` }))));
}

startRouter(render);
