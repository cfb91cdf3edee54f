// Hey (hey.xyz) replica for e2e tests, modelled on Hey's public code: /u/<localName>, /account/<0x…>,
// an action row [Follow|Following|Edit Account][More] rendered late, avatar img alt = address,
// title "{name} (@{username}) • Hey". Feed and post pages have "More" and "Follow" buttons too.
//
// Shapes (?shape=, see spa.js): "direct" = Follow and More are direct children of one row (the
// original replica); "wrapped" = the markup of Hey's public source, heyxyz/hey at commit
// 764292d75fdbd28801f6024402ffbc694c0c5617 (2 March 2025):
//   apps/web/src/components/Account/Details.tsx: the row is <div className="flex items-center space-x-2">
//     holding {own page ? <Button>Edit Account</Button> : <FollowUnfollowButton/>} and <AccountMenu/>;
//   apps/web/src/components/Shared/Account/FollowUnfollowButton.tsx: <div className="contents"> around
//     Follow (Shared/Account/Follow.tsx: <Button aria-label={title}>{title}</Button>, title "Follow") or
//     Unfollow (title "Following");
//   packages/ui/src/Button.tsx: <button>{icon}<div>{children}</div></button> (no aria-label for Edit Account);
//   apps/web/src/components/Account/Menu/index.tsx: <Menu as="div" className="relative"> around
//     <button aria-label="More" type="button"> (headlessui MenuButton: aria-haspopup="menu").
// "unknown" = a made-up redesign the extension cannot recognise (no follow-like or More button).
import { SHAPE, h, loadFixtures, renderDelay, sleep, startRouter, userByAddress, userByName } from '/_shared/spa.js';

const root = document.getElementById('root');

function nav(fx) {
  const links = [['/', 'Home'], ['/explore', 'Explore'], ['/notifications', 'Notifications'], ['/settings', 'Settings']];
  for (const handle of Object.keys(fx.users)) links.push([`/u/${handle}`, `@${handle}`]);
  links.push([`/account/${fx.users.alice.address}`, 'alice by address'], ['/posts/0x01-0x02', 'A post']);
  document.getElementById('nav').replaceChildren(...links.map(([href, text]) => h('a', { href, 'data-link': true, text })));
}

function postCard(fx, handle, id) {
  return h('article', { class: 'post' },
    h('a', { href: `/u/${handle}`, 'data-link': true, text: fx.users[handle].name }),
    h('p', { text: `gm from ${handle}` }),
    h('div', { class: 'row' }, h('a', { href: `/posts/${id}`, 'data-link': true, text: 'Open' }),
      h('button', { 'aria-label': 'More', text: '⋯' })));
}

function toggleFollow(e) {
  const b = e.currentTarget;
  const f = b.getAttribute('aria-label') === 'Follow';
  b.setAttribute('aria-label', f ? 'Following' : 'Follow');
  (b.querySelector('div') ?? b).textContent = f ? 'Following' : 'Follow';
}

function actionRow(me) {
  if (SHAPE === 'wrapped') {
    return h('div', { class: 'space-y-5' },
      h('div', { class: 'flex items-center space-x-2' },
        me ? h('button', { type: 'button', class: 'rounded-full' }, h('svg', { 'aria-hidden': 'true' }), h('div', { text: 'Edit Account' }))
          : h('div', { class: 'contents' },
            h('button', { 'aria-label': 'Follow', class: 'rounded-full font-bold', onclick: toggleFollow }, h('div', { text: 'Follow' }))),
        h('div', { class: 'relative' },
          h('button', { 'aria-label': 'More', type: 'button', 'aria-haspopup': 'menu', 'aria-expanded': 'false', class: 'rounded-full p-1.5', text: '⋮' }))));
  }
  if (SHAPE === 'unknown') {
    return h('div', { class: 'row' },
      h('button', { type: 'button', text: me ? 'Settings' : 'Subscribe' }),
      h('button', { 'aria-label': 'Actions', type: 'button', text: '⋯' }));
  }
  return h('div', { class: 'row' },
    me ? h('button', { 'aria-label': 'Edit Account', text: 'Edit Account' })
      : h('button', { 'aria-label': 'Follow', text: 'Follow', onclick: toggleFollow }),
    h('button', { 'aria-label': 'More', text: '⋯' }));
}

function header(fx, user) {
  const me = fx.me === user.handle;
  return h('section', { 'data-replica': 'profile-header' },
    h('img', { src: '/avatar.svg', alt: user.address }),
    h('h1', { text: user.name }),
    h('p', { text: `@${user.handle}` }),
    actionRow(me),
    h('button', { 'data-replica': 'rerender', text: 'Re-render header', onclick: () => { root.querySelector('[data-replica="profile-header"]').replaceWith(header(fx, user)); } }));
}

async function render(path, isCurrent) {
  const fx = await loadFixtures();
  nav(fx);
  const [, kind, id] = path.split('/');
  if (kind === 'u' || kind === 'account') {
    const user = kind === 'u' ? userByName(fx, decodeURIComponent(id ?? '')) : userByAddress(fx, id);
    // Like React reconciling profile → profile, an existing header is kept and updated in place
    // (same <button aria-label="More"> element) once the new account has loaded.
    const existing = root.querySelector('[data-replica="profile-header"]');
    if (!existing) root.replaceChildren(h('p', { text: 'Loading profile…' }));
    await sleep(renderDelay());
    if (!isCurrent()) return;
    if (!user) { root.replaceChildren(h('h1', { text: 'Account not found' })); document.title = 'Hey'; return; }
    document.title = `${user.name} (@${user.handle}) • Hey`;
    if (existing && existing.isConnected && fx.me !== user.handle && existing.querySelector('button[aria-label="Follow"], button[aria-label="Following"]')) {
      existing.querySelector('img').alt = user.address;
      existing.querySelector('h1').textContent = user.name;
      existing.querySelector('p').textContent = `@${user.handle}`;
      return;
    }
    root.replaceChildren(header(fx, user), postCard(fx, user.handle, '0x01-0x02'));
    return;
  }
  if (kind === 'posts') {
    document.title = 'Post • Hey';
    root.replaceChildren(h('h1', { text: 'Post' }), postCard(fx, 'alice', id));
    return;
  }
  document.title = kind ? `${kind} • Hey` : 'Hey';
  root.replaceChildren(h('h1', { text: kind || 'Home' }),
    h('aside', {}, h('h2', { text: 'Who to follow' }),
      h('div', { class: 'row' }, h('span', { text: 'bob' }), h('button', { 'aria-label': 'Follow', text: 'Follow' }), h('button', { 'aria-label': 'More', text: '⋯' }))),
    ...Object.keys(fx.users).map((handle, i) => postCard(fx, handle, `0x0${i + 1}-0x01`)));
}

startRouter(render);
