export * from './dtype';
export * from './graph';
export * from './ops';
export * from './serialize';
export * from './shape';
