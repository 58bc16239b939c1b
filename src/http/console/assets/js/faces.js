// Faces side by side: a probe face cut from the photo on screen, a hit's stored probe crop and a candidate's
// enrolled thumbnail, all at one size so a reviewer compares like with like.

import { h } from './dom.js';
import { image } from './api.js';

const SIZE = 160;

/** The face in `box` of the loaded `img`, squared with a margin like an aligned crop, on a canvas. */
export function cropFrom(img, box, label) {
  const canvas = h('canvas', { width: SIZE, height: SIZE, class: 'faceimg', role: 'img', 'aria-label': label });
  const side = Math.max(box.width, box.height) * 1.25;
  const x = box.x + box.width / 2 - side / 2;
  const y = box.y + box.height / 2 - side / 2;
  canvas.getContext('2d').drawImage(img, x, y, side, side, 0, 0, SIZE, SIZE);
  return canvas;
}

/** An image the key may see (`path`), or a placeholder saying why there is none. */
export function fetched(path, alt, { allowed = true, missing = 'no photo' } = {}) {
  if (!allowed) return h('div', { class: 'faceimg placeholder muted' }, missing);
  const img = h('img', { class: 'faceimg', alt, width: SIZE, height: SIZE });
  image(path).then((url) => { img.src = url; }).catch((error) => {
    img.replaceWith(h('div', { class: 'faceimg placeholder muted' }, error.status === 404 ? missing : error.message));
  });
  return img;
}

export function thumbnailPath(subjectId, templateId) {
  return `/v1/subjects/${subjectId}/faces/${templateId}/thumbnail`;
}

export function figure(picture, caption) {
  return h('figure', {}, picture, h('figcaption', {}, caption));
}
