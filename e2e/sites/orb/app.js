// Orb (orb.club / orb.ac) replica for e2e tests. Orb's DOM is not public: a plain <main> with a
// profile header (h1, a Follow button, @handle) that renders late; posts at /p/<id>; a feed whose
// "suggested" cards also carry Follow buttons (the URL gate must keep the DM button off the feed).
//
// Shapes (?shape=, see spa.js). Orb's web client is closed source: no public repository was found
// (searched GitHub for orb.club / orbclub; nothing of Orb's), so these are plausible, not copied:
// "direct" = the original replica (<main>, Follow and Share direct children of one row);
// "wrapped" = NO <main> (the page root is a <div>), Follow wrapped twice (span > span) and a
// headlessui-style menu (div > button[aria-label="More options"][aria-haspopup="menu"]);
// "unknown" = no <main>, no follow-like or menu button the extension knows.
import { SHAPE, h, loadFixtures, renderDelay, sleep, startRouter, userByName } from '/_shared/spa.js';

if (SHAPE !== 'direct') { // no <main> landmark at all
  const div = document.createElement('div');
  div.id = 'root';
  div.append(...document.getElementById('root').childNodes);
  document.getElementById('root').replaceWith(div);
}
const root = document.getElementById('root');

function actionRow(me) {
  const label = me ? 'Edit profile' : 'Follow';
  if (SHAPE === 'wrapped') {
    return h('div', { class: 'actions' },
      h('span', { class: 'btn-wrap' }, h('span', {}, h('button', { type: 'button', text: label }))),
      h('div', { class: 'menu' }, h('button', { type: 'button', 'aria-label': 'More options', 'aria-haspopup': 'menu', text: '…' })));
  }
  if (SHAPE === 'unknown') {
    return h('div', { class: 'actions' }, h('button', { type: 'button', text: me ? 'Customize' : 'Join' }), h('button', { type: 'button', text: 'Tip' }));
  }
  return h('div', {}, h('button', { text: label }), h('button', { 'aria-label': 'Share', text: '↗' }));
}

function nav(fx) {
  const links = [['/', 'Home'], ['/explore', 'Explore'], ['/p/abc123', 'A post']];
  for (const handle of Object.keys(fx.users)) links.push([`/@${handle}`, `@${handle}`]);
  document.getElementById('nav').replaceChildren(...links.map(([href, text]) => h('a', { href, 'data-link': true, text })));
}

function profile(fx, user) {
  return h('section', { 'data-replica': 'profile-header' },
    h('img', { src: '/avatar.svg', alt: user.name }),
    h('h1', { text: user.name }),
    actionRow(fx.me === user.handle),
    h('p', { text: `@${user.handle}` }),
    h('button', { 'data-replica': 'rerender', text: 'Re-render header', onclick: () => { root.querySelector('[data-replica="profile-header"]').replaceWith(profile(fx, user)); } }));
}

async function render(path, isCurrent) {
  const fx = await loadFixtures();
  nav(fx);
  const seg = decodeURIComponent(path.slice(1));
  if (seg.startsWith('@') && !seg.includes('/')) {
    root.replaceChildren(h('p', { text: 'Loading…' }));
    await sleep(renderDelay());
    if (!isCurrent()) return;
    const user = userByName(fx, seg.slice(1));
    document.title = user ? `${user.name} | Orb` : 'Orb';
    root.replaceChildren(user ? profile(fx, user) : h('h1', { text: 'Not found' }),
      h('div', { class: 'card' }, h('a', { href: '/p/abc123', 'data-link': true, text: 'a post' })));
    return;
  }
  document.title = 'Orb';
  const cards = Object.entries(fx.users).map(([handle, u]) => h('div', { class: 'card' },
    h('a', { href: `/@${handle}`, 'data-link': true, text: u.name }), h('button', { text: 'Follow' })));
  root.replaceChildren(h('h1', { text: path.startsWith('/p/') ? 'Post' : 'For you' }), ...cards);
}

startRouter(render);
