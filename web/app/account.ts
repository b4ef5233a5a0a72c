// Sign-up, or an existing API key, kept in localStorage.
import { ApiError, gql, storedKey, storeKey } from './api';
import { act, byId, onSubmit } from './dom';

interface Me {
  email: string;
  role: string;
}

/** Wires the account section; `onChange` runs with the viewer after each sign-in and null on sign-out. */
export function setUpAccount(onChange: (me: Me | null) => Promise<void>): Promise<void> {
  const error = byId('account-error');
  const secret = byId('new-secret');

  const signIn = async (key: string, shownOnce: boolean) => {
    // Checked before it is kept: a wrong key must not stay in storage.
    const { me } = await gql<{ me: Me }>('{ me { email role } }', {}, key);
    storeKey(key);
    byId('me-email').textContent = me.email;
    byId('me-role').textContent = me.role;
    byId('new-secret-value').textContent = shownOnce ? key : '';
    secret.hidden = !shownOnce;
    byId('signed-out').hidden = true;
    byId('signed-in').hidden = false;
    await onChange(me);
  };

  onSubmit(byId<HTMLFormElement>('signup-form'), error, async (data) => {
    const { signUp } = await gql<{ signUp: { secret: string } }>(
      'mutation($email: String!) { signUp(email: $email) { secret } }',
      { email: String(data.get('email')).trim() },
      null,
    );
    await signIn(signUp.secret, true);
  });
  onSubmit(byId<HTMLFormElement>('key-form'), error, (data) => signIn(String(data.get('key')).trim(), false));
  byId('sign-out').addEventListener('click', () =>
    act(error, null, async () => {
      storeKey(null);
      byId('signed-in').hidden = true;
      byId('signed-out').hidden = false;
      await onChange(null);
    }),
  );

  const key = storedKey();
  if (!key) return Promise.resolve();
  return act(error, null, async () => {
    try {
      await signIn(key, false);
    } catch (failure) {
      // A revoked key is forgotten; an unreachable API is not a reason to drop a good one.
      if (failure instanceof ApiError && failure.code === 'UNAUTHENTICATED') storeKey(null);
      throw failure;
    }
  });
}
