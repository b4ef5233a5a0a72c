export * from './attention';
export * from './constants';
export * from './conv';
export * from './elementwise';
export * from './matmul';
export * from './nn';
export * from './reduce';
export * from './shape-ops';
