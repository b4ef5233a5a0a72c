import { Arg, Args, Ctx, Field, ID, Mutation, ObjectType, Query, Resolver } from 'type-graphql';
import { ApiKey, Role, User } from '../../entities';
import { issueKey, listKeys, revokeKey } from '../../services/api-keys';
import { listUsers, signUp } from '../../services/users';
import { requireAdmin, requireUser } from '../../services/viewer';
import { connectionType, CreatedArgs, PageArgs, toConnection, type Connection } from '../connections';
import type { Context } from '../context';

const UserConnection = connectionType(User, 'User');
const ApiKeyConnection = connectionType(ApiKey, 'ApiKey');

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

  @Query(() => UserConnection, { description: 'Every account, newest first. Admins only.' })
  async users(
    @Args(() => PageArgs) page: PageArgs,
    @Args(() => CreatedArgs) created: CreatedArgs,
    @Arg('role', () => Role, { nullable: true }) role: Role | null,
    @Ctx() { viewer, services }: Context,
  ): Promise<Connection<User>> {
    requireAdmin(viewer);
    return toConnection(await listUsers(services.db, { ...created, role }, page));
  }

  @Mutation(() => SignUpResult, { description: 'Open to anonymous callers unless SIGNUP_ENABLED=false.' })
  signUp(@Arg('email', () => String) email: string, @Ctx() { services }: Context): Promise<SignUpResult> {
    return signUp(services.db, services.config.signupEnabled, email);
  }

  @Query(() => ApiKeyConnection, { description: 'Your keys, revoked ones too, newest first.' })
  async apiKeys(@Args(() => PageArgs) page: PageArgs, @Ctx() { viewer, services }: Context): Promise<Connection<ApiKey>> {
    return toConnection(await listKeys(services.db, requireUser(viewer), page));
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
