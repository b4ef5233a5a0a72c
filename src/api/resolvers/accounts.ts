import { Arg, Ctx, Field, ID, Mutation, ObjectType, Query, Resolver } from 'type-graphql';
import { ApiKey, User } from '../../entities';
import { issueKey, listKeys, revokeKey } from '../../services/api-keys';
import { listUsers, signUp } from '../../services/users';
import { requireAdmin, requireUser } from '../../services/viewer';
import type { Context } from '../context';

@ObjectType({ description: 'A new API key. The secret is shown only here, once.' })
class IssuedApiKey {
  @Field(() => ApiKey)
  apiKey: ApiKey;

  @Field(() => String, { description: 'Send as `Authorization: Bearer <secret>`.' })
  secret: string;
}

@ObjectType()
class SignUpResult extends IssuedApiKey {
  @Field(() => User)
  user: User;
}

@Resolver()
export class AccountResolver {
  @Query(() => User)
  me(@Ctx() { viewer }: Context): User {
    return requireUser(viewer);
  }

  @Query(() => [User], { description: 'Admins only.' })
  users(@Ctx() { viewer, services }: Context): Promise<User[]> {
    requireAdmin(viewer);
    return listUsers(services.db);
  }

  @Mutation(() => SignUpResult, { description: 'Open to anonymous callers unless SIGNUP_ENABLED=false.' })
  signUp(@Arg('email', () => String) email: string, @Ctx() { services }: Context): Promise<SignUpResult> {
    return signUp(services.db, services.config.signupEnabled, email);
  }

  @Query(() => [ApiKey])
  apiKeys(@Ctx() { viewer, services }: Context): Promise<ApiKey[]> {
    return listKeys(services.db, requireUser(viewer));
  }

  @Mutation(() => IssuedApiKey)
  createApiKey(@Arg('name', () => String) name: string, @Ctx() { viewer, services }: Context): Promise<IssuedApiKey> {
    return issueKey(services.db, requireUser(viewer), name);
  }

  @Mutation(() => ApiKey)
  revokeApiKey(@Arg('id', () => ID) id: string, @Ctx() { viewer, services }: Context): Promise<ApiKey> {
    return revokeKey(services.db, services.keys, requireUser(viewer), id);
  }
}
